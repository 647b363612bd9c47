"""WAIT on the write's own connection: an append acknowledged by the replica is on the
replica; with the replica gone the wait ends at its timeout and reports 0, it never hangs."""

from __future__ import annotations

from pathlib import Path

from tests.integration.redis.support import Opener, until
from tests.integration.redis_servers import RedisDeployment, throwaway
from uwsx.ports.backend import Capability
from uwsx_redis._keys import Keyspace


async def test_replica_wait_is_detected_and_acknowledged(
    redis_replica: RedisDeployment, open_redis: Opener
) -> None:
    backend = await open_redis(redis_replica.url)
    assert Capability.REPLICA_WAIT in backend.capabilities
    assert backend.info["replicas"] == "1"
    for port in (backend.log, backend.stream):
        appended = await port.append("durable", "e", "{}", max_size=10, replicas=(1, 5.0))
        assert (appended.seq, appended.replicas) == (1, 1)
    again = await backend.stream.append_idempotent(
        "idem", "e", "{}", producer_id="p", request_id="r", max_size=10, replicas=(1, 5.0)
    )
    assert again.replicas == 1
    keys = Keyspace(backend.key_prefix).log("uwsx_log", "durable")
    replica = redis_replica.client(1)
    assert replica.zcard(keys.entries) == 1, "acknowledged means already on the replica"


async def test_replica_wait_times_out_without_replica(tmp_path: Path, open_redis: Opener) -> None:
    with throwaway("redis", "replica", tmp_path) as dep:
        backend = await open_redis(dep.url)
        assert Capability.REPLICA_WAIT in backend.capabilities
        dep.kill(1)
        primary = dep.client(0)
        await until(lambda: int(primary.info("replication")["connected_slaves"]) == 0, "detach")
        appended = await backend.log.append("l", "e", "{}", max_size=10, replicas=(1, 0.2))
        assert (appended.seq, appended.replicas) == (1, 0)
