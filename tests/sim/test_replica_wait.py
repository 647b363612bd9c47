"""WAIT in the backend model: counts by the seeded lag, timeouts, failover, the feature path."""

from __future__ import annotations

import asyncio

import pytest

from uwsx.errors import ReplicationTimeoutError, UnsupportedBackendError
from uwsx.features.replay import ReplayBuffer
from uwsx.platform import LocalPlatform
from uwsx.ports import Capability
from uwsx_sim.node import SimNode
from uwsx_sim.runner import explore
from uwsx_sim.scenario import find_scenario
from uwsx_sim.world import World

from .probe import Script
from .probe import run_script as _run_script

pytestmark = pytest.mark.usefixtures("probe")


def run_script(script: Script, **backend: object) -> World:
    return _run_script(script, backend=dict(backend))


def test_capability_only_with_replicas() -> None:
    async def without(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        assert Capability.REPLICA_WAIT not in conn.capabilities
        with pytest.raises(UnsupportedBackendError):
            await conn.log.append("l", "e", "{}", max_size=5, replicas=(1, 1.0))

    run_script(without)

    async def with_replicas(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        assert Capability.REPLICA_WAIT in conn.capabilities
        with pytest.raises(TypeError):
            await conn.log.append("l", "e", "{}", max_size=5, replicas=1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="count >= 0"):
            await conn.log.append("l", "e", "{}", max_size=5, replicas=(-1, 1.0))
        plain = await conn.log.append("l", "e", "{}", max_size=5)
        assert plain.replicas is None  # no WAIT asked, none reported

    run_script(with_replicas, replicas=1)


async def timed_append(world: World, node: SimNode, wait: tuple[int, float]) -> tuple[int, float]:
    conn = node.conn
    assert conn is not None
    start = world.loop.time()
    out = await conn.stream.append("s", "e", "{}", max_size=50, replicas=wait)
    assert out.replicas is not None
    return out.replicas, world.loop.time() - start


def test_wait_returns_once_enough_replicas_acknowledged() -> None:
    async def script(world: World, node: SimNode) -> None:
        # both replicas apply each write 100 ms after the primary
        acked, took = await timed_append(world, node, (1, 1.0))
        assert acked == 2  # the count at return, which may exceed the one asked for
        assert 0.1 <= took < 0.15
        acked, took = await timed_append(world, node, (0, 1.0))
        assert acked == 0  # WAIT 0 returns at once, before any replica has it
        assert took < 0.05

    run_script(script, replicas=2, replication_lag="100ms")


def test_wait_times_out_with_the_count_so_far() -> None:
    async def script(world: World, node: SimNode) -> None:
        acked, took = await timed_append(world, node, (3, 0.5))  # only two replicas exist
        assert acked == 2
        assert 0.5 <= took < 0.55

    run_script(script, replicas=2, replication_lag="100ms")

    async def slow(world: World, node: SimNode) -> None:
        acked, took = await timed_append(world, node, (1, 0.5))
        assert acked == 0
        assert 0.5 <= took < 0.55
        # the timeout extends the request deadline: a 2 s wait is not a lost reply
        acked, took = await timed_append(world, node, (1, 2.5))
        assert acked == 1
        assert 2.0 <= took < 2.05

    run_script(slow, replicas=1, replication_lag="2s")


def test_wait_blocks_the_connection() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        loop = asyncio.get_running_loop()
        done: dict[str, float] = {}

        async def append() -> None:
            await conn.log.append("l", "e", "{}", max_size=5, replicas=(1, 1.0))
            done["append"] = world.loop.time()

        async def read() -> None:
            await asyncio.sleep(0.01)  # sent after the append, same connection
            await conn.kv.get("k")
            done["read"] = world.loop.time()

        await asyncio.gather(loop.create_task(append()), loop.create_task(read()))
        assert done["read"] >= done["append"] >= 0.3

    run_script(script, replicas=1, replication_lag="300ms")


def test_acknowledged_writes_survive_a_failover_without_a_visible_epoch() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        for i in range(8):
            out = await conn.log.append("l", "e", str(i), max_size=50, replicas=(1, 5.0))
            assert out.replicas is not None
            assert out.replicas >= 1
            world.failover()  # at once: the other replica may well lack it
            await world.clock.sleep(0.6)  # every client has moved (window 500 ms)
            stored = [e.data for e in await conn.log.read_after("l", 0)]
            assert str(i) in stored

    run_script(
        script,
        replicas=2,
        replication_lag="1ms..1s",
        failover_window="500ms",
        epoch_visible=False,
    )


def test_demoted_primary_gets_no_acknowledgements() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        world.failover()  # this client keeps talking to the old primary for a while
        out = await conn.log.append("l", "e", "{}", max_size=5, replicas=(1, 0.3))
        assert out.replicas == 0  # split brain: WAIT exposes the doomed write

    run_script(script, replicas=1, replication_lag="10ms", failover_window="1000s")


def test_acknowledgements_after_the_generation_ended_do_not_count() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        loop = asyncio.get_running_loop()
        task = loop.create_task(conn.log.append("l", "e", "{}", max_size=5, replicas=(1, 3.0)))
        await world.clock.sleep(0.5)
        world.failover()  # before the replica (lag 1 s) has the write: it is lost
        out = await task
        assert out.replicas == 0

    run_script(script, replicas=1, replication_lag="1s", failover_window="1000s")


def test_replay_buffer_replicated_durability() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        platform = LocalPlatform()
        durable = ReplayBuffer(
            conn, durability="replicated", min_replicas=1, replication_timeout=0.2
        )
        with pytest.raises(ReplicationTimeoutError):
            await durable.publish(platform, "t", "m", {"n": 1})  # lag 1 s > 0.2 s
        patient = ReplayBuffer(
            conn, durability="replicated", min_replicas=1, replication_timeout=2.0
        )
        assert await patient.publish(platform, "t", "m", {"n": 2}) == 2

    run_script(script, replicas=1, replication_lag="1s")


def test_replicated_failover_scenario_passes_a_batch_of_seeds() -> None:
    ex = explore(find_scenario("replay-failover-replicated"), range(4, 8), do_shrink=False)
    assert ex.failure is None, ex.failure
    assert not ex.silent_probes
