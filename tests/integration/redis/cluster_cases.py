"""Cluster behaviour shared by the Redis Cluster and Valkey cluster tests: every multi-key
operation runs inside one slot on all three masters (no CROSSSLOT), scans and function loads
reach every primary, sharded channels and expiry events work on every node, and an
operation costs one round trip per node it touches."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import ClassVar

import pytest
from redis.crc import key_slot

from tests.integration.redis.support import Opener, WireCounter, until
from tests.integration.redis_servers import RedisDeployment
from uwsx.ports.checks import colocate
from uwsx_redis import RedisBackend
from uwsx_redis._keys import RESERVED

__all__ = ["ClusterCases"]


def _node_keys(dep: RedisDeployment, prefix: str) -> dict[int, list[bytes]]:
    """Keys under ``prefix`` on each master, by port."""
    out: dict[int, list[bytes]] = {}
    for index, port in enumerate(dep.ports):
        client = dep.client(index)
        out[port] = list(client.scan_iter(match=prefix + "*", count=1000))
        client.close()
    return out


def _channels_on_every_node(backend: RedisBackend, stem: str) -> list[str]:
    """Channel names (unprefixed) whose slots fall on each of the masters."""
    by_node: dict[str, str] = {}
    for i in range(500):
        name = f"{stem}{i}"
        node = backend.topology.node_for(backend.key_prefix + name).name
        by_node.setdefault(node, name)
    assert len(by_node) == len(backend.topology.primaries())
    return sorted(by_node.values())


class ClusterCases:
    """Subclasses provide the ``cluster`` fixture (a 3-master deployment)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = []

    @pytest.fixture
    def cluster(self) -> RedisDeployment:
        raise NotImplementedError

    async def test_multi_key_operations_stay_in_one_slot_on_every_master(
        self, cluster: RedisDeployment, open_redis: Opener
    ) -> None:
        backend = await open_redis(cluster.url)
        assert backend.info["mode"] == "cluster"
        assert backend.info["primaries"] == "3"
        kv, log, stream, locks = backend.kv, backend.log, backend.stream, backend.locks
        for i in range(24):
            name = f"room:{i}"
            assert (await log.append(name, "e", "{}", max_size=3, ttl=60)).seq == 1
            assert (await log.bounds(name)).newest == 1
            fresh = await stream.append_idempotent(
                name, "e", "{}", producer_id=f"p{i}", request_id="r", max_size=5, dedup_ttl=60
            )
            again = await stream.append_idempotent(
                name, "e", "{}", producer_id=f"p{i}", request_id="r", max_size=5, dedup_ttl=60
            )
            assert (fresh.seq, again.duplicate) == (1, True)
            acquired = await locks.acquire(name, "o", ttl=30)
            assert acquired is not None
            assert (await locks.seize(name, "p", ttl=30)).fence > acquired.fence
            tag = colocate(name)
            put = await kv.map_put_bounded(
                f"grp:{tag}:members", "m", "v", max_fields=3, unless_key=f"grp:{tag}:closed"
            )
            assert put.status == "stored"
            q = backend.queue.space(f"space_{i}")
            await q.enqueue("jobs", "{}")
            [job] = await q.claim("jobs", limit=1, visibility=30)
            assert await q.complete([(job.id, job.token)]) == [job.id]
            await q.task_insert("t", "n", "{}", status="pending", fence="f", fence_ttl=30)
            [task] = await q.task_claim_pending(limit=1, fence_ttl=30)
            assert await q.task_commit(task.id, task.fence, "{}")
        nodes = _node_keys(cluster, backend.key_prefix)
        assert all(nodes.values()), (
            f"every master holds keys: { {p: len(k) for p, k in nodes.items()} }"
        )
        reserved = (backend.key_prefix + RESERVED).encode()
        groups: dict[bytes, set[int]] = defaultdict(set)
        for keys in nodes.values():
            for key in keys:
                if key.startswith(reserved):
                    owner = key[: key.index(b"}") + 1]  # everything up to the hash tag
                    groups[owner].add(key_slot(key))
        assert groups
        spread = {owner: slots for owner, slots in groups.items() if len(slots) > 1}
        assert not spread, f"keys of one log/lock/queue in several slots: {spread}"

    async def test_keys_in_different_slots_are_refused_clearly(
        self, cluster: RedisDeployment, open_redis: Opener
    ) -> None:
        kv = (await open_redis(cluster.url)).kv
        with pytest.raises(ValueError, match="co-location tag"):
            await kv.map_put_bounded("members:a", "m", "v", max_fields=2, unless_key="closed:b")
        assert await kv.map_items("members:a") == {}

    async def test_delete_prefix_reaches_every_primary(
        self, cluster: RedisDeployment, open_redis: Opener
    ) -> None:
        backend = await open_redis(cluster.url)
        kv = backend.kv
        tag = colocate("one-slot")
        await asyncio.gather(*(kv.set(f"doomed:{i}", "v") for i in range(100)))
        await asyncio.gather(*(kv.set(f"doomed:{tag}:{i}", "v") for i in range(100)))
        await asyncio.gather(*(kv.map_put(f"doomed:m{i}", "f", "v") for i in range(10)))
        await kv.set("kept:1", "v")
        await backend.log.append("doomed:log", "e", "{}", max_size=5)
        nodes = _node_keys(cluster, backend.key_prefix + "doomed:")
        assert all(nodes.values()), "the keys are spread over every master"
        assert await kv.delete_prefix("doomed:") == 210
        assert not any(_node_keys(cluster, backend.key_prefix + "doomed:").values())
        assert await kv.get("kept:1") == "v"
        assert (await backend.log.bounds("doomed:log")).newest == 1, "logs are not KV keys"

    async def test_functions_load_on_every_primary(
        self, cluster: RedisDeployment, open_redis: Opener
    ) -> None:
        backend = await open_redis(cluster.url)
        functions = backend.functions
        assert functions is not None
        name = "uwsx_cluster_" + backend.key_prefix.strip(":")
        code = (
            f"#!lua name={name}\n"
            f"redis.register_function('{name}_set', function(keys, args)\n"
            "  return redis.call('SET', keys[1], args[1])\nend)\n"
        )
        await functions.load(code)
        try:
            for index in range(len(cluster.ports)):
                listed = cluster.client(index).function_list(library=name)
                assert len(listed) == 1, f"library missing on master {index}"
            keys = [f"fn:{i}" for i in range(30)]
            for key in keys:
                await functions.call(f"{name}_set", keys=[key], args=["v"])
            assert await backend.kv.get_many(keys) == ["v"] * len(keys)
        finally:
            assert await functions.delete(name)

    async def test_sharded_and_plain_channels_on_every_node(
        self, cluster: RedisDeployment, open_redis: Opener
    ) -> None:
        backend = await open_redis(cluster.url)
        other = await open_redis(cluster.url)
        channels = _channels_on_every_node(backend, "ch")
        sharded: list[tuple[str, str]] = []
        plain: list[tuple[str, str]] = []
        await backend.pubsub.subscribe(channels, lambda c, m: sharded.append((c, m)), sharded=True)
        await backend.pubsub.subscribe(channels, lambda c, m: plain.append((c, m)))
        await other.pubsub.publish_many([(c, "s") for c in channels], sharded=True)
        await other.pubsub.publish_many([(c, "p") for c in channels])
        await until(lambda: len(sharded) == len(channels), "sharded messages from every node")
        await until(lambda: len(plain) == len(channels), "plain messages")
        assert sorted(sharded) == [(c, "s") for c in channels]
        assert sorted(plain) == [(c, "p") for c in channels]

    async def test_expiry_events_from_every_primary(
        self, cluster: RedisDeployment, open_redis: Opener
    ) -> None:
        backend = await open_redis(cluster.url)
        keys = _channels_on_every_node(backend, "exp:")
        expired: list[str] = []
        await backend.pubsub.subscribe_expired("exp:", expired.append)
        for key in keys:
            await backend.kv.set(key, "v", ttl=0.05)
        await until(lambda: sorted(expired) == keys, "an expiry event from every master")

    async def test_one_round_trip_per_node_touched(
        self, cluster: RedisDeployment, open_redis: Opener, wire: WireCounter
    ) -> None:
        backend = await open_redis(cluster.url)
        keys = _channels_on_every_node(backend, "rt:")
        await backend.kv.get_many(keys)  # open a connection to every node
        await backend.log.append("rt", "e", "{}", max_size=5)
        wire.reset()
        assert await backend.kv.get_many(keys) == [None] * len(keys)
        assert sorted(wire.by_port.values()) == [1, 1, 1], dict(wire.by_port)
        wire.reset()
        await backend.log.append("rt", "e", "{}", max_size=5)
        assert wire.sends == 1
