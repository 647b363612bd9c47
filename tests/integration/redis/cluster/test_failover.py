"""A cluster failover for real, on Redis and on Valkey: 3 masters, one of them with a replica;
the master is killed and its replica takes its slots over (``CLUSTER FAILOVER TAKEOVER``).
Afterwards the adapter sends that master's slots to the new one, a sharded subscription on them
is moved there with the loss reported, its logs report a new epoch, and key-expiry events of
those slots arrive from the new master (with the loss window of the switch reported), without
reopening the backend."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.integration.redis.support import Opener, until
from tests.integration.redis_servers import RedisDeployment, throwaway
from uwsx.errors import Unavailable
from uwsx.ports.pubsub import LossWindow
from uwsx_redis import RedisBackend
from uwsx_redis._keys import Keyspace

WAIT = 40.0


def _on(backend: RedisBackend, port: int, stem: str) -> str:
    """A name whose slot the master on ``port`` owns."""
    return next(
        f"{stem}{i}"
        for i in range(10_000)
        if backend.topology.node_for(backend.key_prefix + f"{stem}{i}").name.endswith(f":{port}")
    )


def _log_on(backend: RedisBackend, port: int) -> str:
    """A log name whose keys the master on ``port`` owns."""
    keys = Keyspace(backend.key_prefix)
    return next(
        f"log{i}"
        for i in range(10_000)
        if backend.topology.node_for(keys.log("uwsx_log", f"log{i}").counter).name.endswith(
            f":{port}"
        )
    )


def _take_over(dep: RedisDeployment) -> None:
    replica: Any = dep.client(3)
    try:
        replica.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
    finally:
        replica.close()


def _serving(dep: RedisDeployment) -> bool:
    """The replica is a master and every live node sees the cluster as healthy."""
    clients = [dep.client(i) for i in (1, 2, 3)]
    try:
        if clients[2].info("replication").get("role") != "master":
            return False
        return all(
            "cluster_state:ok" in c.execute_command("CLUSTER", "INFO").decode() for c in clients
        )
    finally:
        for c in clients:
            c.close()


def _cluster_view(dep: RedisDeployment) -> str:
    """What each live node says of the cluster (for a failure message)."""
    lines = []
    for i in (1, 2, 3):
        c = dep.client(i)
        try:
            state = c.execute_command("CLUSTER", "INFO").decode().split()[0]
            nodes = c.execute_command("CLUSTER", "NODES").decode().strip()
            lines.append(f"node {i} ({c.info('replication').get('role')}, {state}):\n{nodes}")
        finally:
            c.close()
    return "\n".join(lines)


async def _fail_over(dep: RedisDeployment) -> None:
    """Kill master 0 and have its replica take its slots over (the harness made sure the
    replica had heard of every slot of its primary: it claims only those)."""
    dep.kill(0)
    _take_over(dep)
    try:
        await until(lambda: _serving(dep), "the replica to take the slots over", WAIT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the cluster says:\n{_cluster_view(dep)}") from None


async def _write_when_served(backend: RedisBackend, key: str) -> None:
    """Write ``key`` once its slot is served again (Unavailable until then: nothing applied)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        try:
            await backend.kv.set(key, "after")
            return
        except Unavailable:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("kind", ["redis", "valkey"])
async def test_failover_moves_commands_sharded_channels_and_expiry_events(
    kind: str, tmp_path: Path, open_redis: Opener
) -> None:
    with throwaway(kind, "cluster-replica", tmp_path) as dep:
        backend = await open_redis(
            dep.url, socket_timeout=1.0, command_timeout=3.0, health_interval=0.5
        )
        victim = dep.ports[0]
        key, channel = _on(backend, victim, "k"), _on(backend, victim, "c")
        expiring = _on(backend, victim, "exp:")
        log = _log_on(backend, victim)
        await backend.log.append(log, "e", "{}", max_size=5)
        epoch = (await backend.log.bounds(log)).epoch
        received: list[str] = []
        expired: list[str] = []
        losses: list[LossWindow] = []
        expiry_losses: list[LossWindow] = []
        sub = await backend.pubsub.subscribe(
            [channel], lambda c, m: received.append(m), sharded=True, on_loss=losses.append
        )
        expiry = await backend.pubsub.subscribe_expired(
            "exp:", expired.append, on_loss=expiry_losses.append
        )
        await backend.kv.set(key, "before")
        await backend.pubsub.publish(channel, "before", sharded=True)
        await until(lambda: "before" in received, "the first message")

        await _fail_over(dep)

        await _write_when_served(backend, key)
        assert await backend.kv.get(key) == "after"
        # The new master cannot vouch for the old one's last appends: a new epoch.
        assert (await backend.log.bounds(log)).epoch != epoch

        await until(lambda: bool(losses) and sub.healthy, "the sharded channel to move", WAIT)
        assert losses[0].started <= losses[0].ended
        await backend.pubsub.publish(channel, "after", sharded=True)
        await until(lambda: "after" in received, "sharded delivery from the new master")

        await until(lambda: bool(expiry_losses), "the expiry loss window", WAIT)
        await until(lambda: expiry.healthy, "expiry events to be healthy again", WAIT)
        await backend.kv.set(expiring, "v", ttl=0.05)
        await until(lambda: expiring in expired, "an expiry event from the new master", WAIT)
