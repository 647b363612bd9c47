"""Executor review on a real 3-master cluster: MOVED in the middle of a pipeline, redirect
loops, and a call whose ops land on a live and a dead master."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.redis.cluster.test_redirects import _key_in_slot_of, _node_ids, _set_slot
from tests.integration.redis.support import Opener
from tests.integration.redis_servers import throwaway
from uwsx.errors import Indeterminate, Unavailable
from uwsx_redis._driver_exec import Executor, Op


async def test_moved_in_the_middle_of_a_pipeline_keeps_order_and_outcomes(
    tmp_path: Path, open_redis: Opener
) -> None:
    with throwaway("redis", "cluster", tmp_path) as dep:
        stale = await open_redis(dep.url)  # its slot map only learns by MOVED
        ex: Executor = stale._ctx.executor
        ids = _node_ids(dep)
        moving = stale.key_prefix + _key_in_slot_of(stale, "moving:", 0, dep)
        staying = stale.key_prefix + _key_in_slot_of(stale, "staying:", 0, dep)
        slot = stale._ctx.topology.keyslot(moving)
        assert slot != stale._ctx.topology.keyslot(staying)
        dep.client(1).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[0])
        dep.client(0).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[1])
        _set_slot(dep, slot, "NODE", ids[1])
        ops = [
            Op([("RPUSH", moving, "1")], route=moving),
            Op([("RPUSH", staying, "x")], route=staying),
            Op([("RPUSH", moving, "2")], route=moving),
            Op([("RPUSH", staying, "y")], route=staying),
            Op([("RPUSH", moving, "3")], route=moving),
        ]
        replies = await ex.run_all(ops)
        assert replies == [[1], [1], [2], [2], [3]]
        assert stale.stats["resent"] == 3, "only the moved ops were resent"
        assert dep.client(1).lrange(moving, 0, -1) == [b"1", b"2", b"3"]
        assert dep.client(0).lrange(staying, 0, -1) == [b"x", b"y"]


async def test_redirect_loop_ends_unavailable(tmp_path: Path, open_redis: Opener) -> None:
    with throwaway("redis", "cluster", tmp_path) as dep:
        backend = await open_redis(dep.url, command_timeout=30.0)
        ids = _node_ids(dep)
        key = _key_in_slot_of(backend, "looping:", 0, dep)
        slot = backend._ctx.topology.keyslot(backend.key_prefix + key)
        # Master 0 says master 1 owns the slot; master 1 still says master 0 does.
        dep.client(0).execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[1])
        with pytest.raises(Unavailable, match=r"redirect|not ready") as caught:
            await backend.kv.incr(key)
        assert not isinstance(caught.value, Indeterminate)
        assert await backend.kv.incr(_key_in_slot_of(backend, "fine:", 2, dep)) == 1


async def test_call_applied_on_one_master_and_refused_by_a_dead_one_is_indeterminate(
    tmp_path: Path, open_redis: Opener
) -> None:
    with throwaway("redis", "cluster", tmp_path) as dep:
        backend = await open_redis(dep.url, connect_timeout=0.5, command_timeout=5.0)
        kv = backend.kv
        alive = _key_in_slot_of(backend, "alive:", 0, dep)
        dead = _key_in_slot_of(backend, "dead:", 2, dep)
        await kv.set(alive, "1")
        await kv.set(dead, "1")
        dep.kill(2)
        with pytest.raises(Unavailable) as read:
            await kv.get_many([alive, dead])  # reads: retrying is harmless
        assert not isinstance(read.value, Indeterminate)
        with pytest.raises(Indeterminate):
            await kv.delete(alive, dead)  # one deleted, one certainly not
        assert dep.client(0).exists(backend.key_prefix + alive) == 0
