"""Slot ownership changing under the adapter: MOVED (a slot moved to another master), ASK (a
slot being migrated) and a sharded channel whose slot moved. Operations are resent to the
right node (nothing ran where they were refused) and the sharded subscription follows its
slot, reporting the loss window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.crc import key_slot

from tests.integration.redis.support import Opener, until
from tests.integration.redis_servers import RedisDeployment, throwaway
from uwsx.ports.pubsub import LossWindow
from uwsx_redis import RedisBackend


def _node_ids(dep: RedisDeployment) -> list[str]:
    return [str(dep.client(i).execute_command("CLUSTER", "MYID").decode()) for i in range(3)]


def _owner(dep: RedisDeployment, slot: int) -> int:
    for start, end, primary, *_ in dep.client(0).execute_command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return dep.ports.index(int(primary[1]))
    raise AssertionError(f"slot {slot} is not covered")


def _key_in_slot_of(backend: RedisBackend, stem: str, index: int, dep: RedisDeployment) -> str:
    """A key name (unprefixed) whose slot is owned by master ``index``."""
    for i in range(5000):
        name = f"{stem}{i}"
        if _owner(dep, key_slot((backend.key_prefix + name).encode())) == index:
            return name
    raise AssertionError("no key found")


def _set_slot(dep: RedisDeployment, slot: int, *args: Any) -> None:
    for i in range(3):
        dep.client(i).execute_command("CLUSTER", "SETSLOT", slot, *args)


async def test_moved_slot_is_followed(tmp_path: Path, open_redis: Opener) -> None:
    with throwaway("redis", "cluster", tmp_path) as dep:
        backend = await open_redis(dep.url, health_interval=0.5)
        stale = await open_redis(dep.url)  # no subscription: its slot map only learns by MOVED
        ids = _node_ids(dep)
        key = _key_in_slot_of(backend, "moving:", 0, dep)
        channel = _key_in_slot_of(backend, "moving-channel:", 0, dep)
        slot = key_slot((backend.key_prefix + key).encode())
        channel_slot = key_slot((backend.key_prefix + channel).encode())
        received: list[str] = []
        losses: list[LossWindow] = []
        await backend.pubsub.subscribe(
            [channel], lambda c, m: received.append(m), sharded=True, on_loss=losses.append
        )
        for moved in {slot, channel_slot}:  # both empty: no keys to migrate
            dep.client(1).execute_command("CLUSTER", "SETSLOT", moved, "IMPORTING", ids[0])
            dep.client(0).execute_command("CLUSTER", "SETSLOT", moved, "MIGRATING", ids[1])
            _set_slot(dep, moved, "NODE", ids[1])
        assert _owner(dep, slot) == 1
        assert await stale.kv.map_put(key, "f", "v") == 0
        assert stale.stats["resent"] == 1, "the first call met MOVED and was resent"
        await stale.kv.set(key, "v")
        assert await stale.kv.get(key) == "v"
        assert stale.stats["resent"] == 1, "the refreshed slot map is used from then on"
        assert dep.client(1).exists(backend.key_prefix + key) == 1
        await until(lambda: bool(losses), "the moved sharded channel to be reported")
        await backend.pubsub.publish(channel, "after the move", sharded=True)
        await until(lambda: "after the move" in received, "delivery from the new owner")


async def test_migrating_slot_is_followed_with_asking(tmp_path: Path, open_redis: Opener) -> None:
    with throwaway("redis", "cluster", tmp_path) as dep:
        backend = await open_redis(dep.url)
        ids = _node_ids(dep)
        key = _key_in_slot_of(backend, "migrating:", 0, dep)
        slot = key_slot((backend.key_prefix + key).encode())
        dep.client(1).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[0])
        dep.client(0).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[1])
        # The key is not on the source any more: the source answers ASK, the target runs it.
        assert await backend.kv.map_put(key, "f", "v") == 0
        assert backend.stats["resent"] == 1, "sent again with ASKING to the target"
        count = ("CLUSTER", "COUNTKEYSINSLOT", slot)
        assert dep.client(1).execute_command(*count) == 1
        assert dep.client(0).execute_command(*count) == 0
        _set_slot(dep, slot, "NODE", ids[1])
        assert await backend.kv.map_items(key) == {"f": "v"}
