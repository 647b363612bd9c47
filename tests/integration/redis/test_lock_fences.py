"""Lock fences on Redis and Valkey are hybrid-logical-clock values.

The acquire script issues ``max(counter + 1, TIME in microseconds)`` and stores it. These tests
take the counter away from under the adapter the way a failover or a restart does (rolled back
to an older value, deleted) and check that the next fence is still above every earlier one;
then they check the clock term and the counter term separately, and finally run a real
failover to a replica that missed the latest grants.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster

from tests.integration.redis.support import Opener, until
from tests.integration.redis_servers import RedisDeployment, throwaway
from uwsx.ports.locks import Lease, Locks
from uwsx_redis._keys import Keyspace

DEPLOYMENTS = ["redis_standalone", "valkey_standalone", "redis_cluster", "valkey_cluster"]
HOUR_US = 3_600_000_000


@pytest.fixture(params=DEPLOYMENTS)
def deployment(request: pytest.FixtureRequest) -> RedisDeployment:
    dep: RedisDeployment = request.getfixturevalue(request.param)
    return dep


@pytest.fixture
def raw(deployment: RedisDeployment) -> Iterator[Any]:
    """A plain redis-py client on the deployment (a cluster client for a cluster)."""
    scheme, rest = deployment.url.split("://", 1)
    base = scheme.split("+")[0]
    url = ("rediss" if base in ("rediss", "valkeys") else "redis") + "://" + rest
    client: Any = (
        redis.cluster.RedisCluster.from_url(url)
        if deployment.layout == "cluster"
        else redis.Redis.from_url(url)
    )
    try:
        yield client
    finally:
        client.close()


def server_micros(raw: Any, key: str) -> int:
    """TIME, in microseconds, on the node that serves ``key``."""
    if isinstance(raw, redis.cluster.RedisCluster):
        node = raw.get_node_from_key(key)  # type: ignore[no-untyped-call]
        seconds, micros = raw.time(target_nodes=node)
    else:
        seconds, micros = raw.time()
    return int(seconds) * 1_000_000 + int(micros)


def granted(lease: Lease | None, fences: list[int]) -> Lease:
    assert lease is not None
    fences.append(lease.fence)
    return lease


async def test_lock_fences_stay_above_earlier_ones_when_the_counter_is_lost(
    deployment: RedisDeployment, raw: Any, open_redis: Opener
) -> None:
    backend = await open_redis(deployment.url)
    locks: Locks = backend.locks
    lease_key, counter = Keyspace(backend.key_prefix).lock("res")
    fences: list[int] = []
    granted(await locks.acquire("res", "a", ttl=30.0), fences)
    older = raw.get(counter)  # what a replica that lags behind the next grants still holds
    assert older is not None
    assert int(older) == fences[0], "the counter stores the fence"
    assert await locks.release("res", "a")
    granted(await locks.seize("res", "b", ttl=30.0), fences)
    assert await locks.release("res", "b")
    granted(await locks.acquire("res", "c", ttl=30.0), fences)
    assert await locks.release("res", "c")

    raw.set(counter, older)  # a failover lost the latest increments
    granted(await locks.acquire("res", "d", ttl=30.0), fences)
    raw.delete(counter)  # a restart without persistence lost the counter
    granted(await locks.seize("res", "e", ttl=30.0), fences)
    raw.delete(counter, lease_key)  # ... and the lease with it
    granted(await locks.acquire("res", "f", ttl=30.0), fences)
    assert fences == sorted(set(fences)), f"fences must strictly increase: {fences}"


async def test_lock_fences_are_at_least_the_server_clock(
    deployment: RedisDeployment, raw: Any, open_redis: Opener
) -> None:
    backend = await open_redis(deployment.url)
    _, counter = Keyspace(backend.key_prefix).lock("clocked")
    raw.set(counter, "7")  # a counter left by INCR-only fences is overtaken by the clock
    before = server_micros(raw, counter)
    lease = await backend.locks.acquire("clocked", "a", ttl=30.0)
    after = server_micros(raw, counter)
    assert lease is not None
    assert before <= lease.fence <= after
    assert int(raw.get(counter)) == lease.fence
    holder = await backend.locks.holder("clocked")
    assert holder is not None
    assert holder.fence == lease.fence


async def test_lock_counter_ahead_of_the_clock_keeps_counting(
    deployment: RedisDeployment, raw: Any, open_redis: Opener
) -> None:
    """A fence issued by a node whose clock ran an hour ahead: the counter term orders the
    next fences while this node's clock is behind it."""
    backend = await open_redis(deployment.url)
    _, counter = Keyspace(backend.key_prefix).lock("ahead")
    ahead = server_micros(raw, counter) + HOUR_US
    raw.set(counter, str(ahead))
    first = await backend.locks.acquire("ahead", "a", ttl=30.0)
    assert first is not None
    assert first.fence == ahead + 1
    assert (await backend.locks.seize("ahead", "b", ttl=30.0)).fence == ahead + 2


@pytest.mark.parametrize("kind", ["redis", "valkey"])
async def test_lock_fences_survive_a_failover_that_loses_the_latest_grants(
    kind: str, tmp_path: Path, open_redis: Opener
) -> None:
    with throwaway(kind, "replica", tmp_path) as dep:
        backend = await open_redis(dep.url)
        replica = dep.client(1)
        _, counter = Keyspace(backend.key_prefix).lock("res")
        fences: list[int] = []
        granted(await backend.locks.acquire("res", "a", ttl=30.0), fences)
        assert await backend.locks.release("res", "a")
        # Poll rather than WAIT: a replica still loading its initial sync acknowledges writes
        # it has only buffered (Valkey 9), and promoting it then would drop them.
        await until(lambda: replica.get(counter) == str(fences[0]).encode(), "the first grant")
        replica.execute_command("REPLICAOF", "NO", "ONE")  # promoted: later writes never reach it
        for owner in ("b", "c", "d"):
            granted(await backend.locks.acquire("res", owner, ttl=30.0), fences)
            assert await backend.locks.release("res", owner)
        assert int(replica.get(counter)) == fences[0], "the promoted replica lost three grants"

        scheme = dep.url.split("://", 1)[0]
        promoted = await open_redis(f"{scheme}://127.0.0.1:{dep.ports[1]}/0")
        assert promoted.key_prefix == backend.key_prefix, "the same namespace, on the new primary"
        granted(await promoted.locks.acquire("res", "e", ttl=30.0), fences)
        assert fences == sorted(set(fences)), f"fences must strictly increase: {fences}"
