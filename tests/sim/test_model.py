"""The backend model and links: what a feature sees under each fault."""

from __future__ import annotations

from typing import Any

import pytest

from uwsx.errors import Indeterminate, Unavailable
from uwsx.ports.pubsub import LossWindow
from uwsx_sim.node import SimNode
from uwsx_sim.world import World

from .probe import run_script

pytestmark = pytest.mark.usefixtures("probe")


def _healthy(sub: Any) -> bool:
    return bool(sub.healthy)


def test_lost_reply_is_indeterminate_but_applied() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        node.link.drop_reply = 1.0
        with pytest.raises(Indeterminate):
            await conn.kv.set("k", "v")
        node.link.drop_reply = 0.0
        assert await conn.kv.get("k") == "v"

    run_script(script)


def test_lost_request_is_indeterminate_and_not_applied() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        node.link.drop_request = 1.0
        start = world.loop.time()
        with pytest.raises(Indeterminate):
            await conn.kv.set("k", "v")
        assert world.loop.time() - start == pytest.approx(node.link.params.request_timeout)
        node.link.drop_request = 0.0
        assert await conn.kv.get("k") is None

    run_script(script)


def test_crashed_instance_sends_nothing_and_restarts_fresh() -> None:
    async def script(world: World, node: SimNode) -> None:
        other = world.nodes[1]
        first = other.conn
        assert first is not None
        old_ref = other.ref
        other.crash()
        with pytest.raises(Unavailable):
            await first.kv.set("after-crash", "x")
        assert not old_ref.alive
        other.restart()
        await world.clock.sleep(0.5)
        assert other.incarnation == 2
        assert other.conn is not None
        assert other.conn is not first
        assert await other.conn.kv.get("after-crash") is None

    run_script(script)


def test_failover_loses_the_unreplicated_suffix_and_bumps_the_epoch() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        await conn.kv.set("early", "1")
        await world.clock.sleep(20)  # replicated (lag <= 10 s)
        epoch = (await conn.log.bounds("x")).epoch
        await conn.kv.set("late", "1")  # not yet replicated when the failover comes
        world.failover()
        await world.clock.sleep(1.0)  # every client has switched (window 0..0.5 s)
        assert await conn.kv.get("early") == "1"
        assert await conn.kv.get("late") is None
        assert (await conn.log.bounds("x")).epoch != epoch
        assert world.model.lost_writes >= 1

    run_script(
        script, backend={"replicas": 1, "replication_lag": "10s", "failover_window": "500ms"}
    )


def test_failover_without_visible_epoch_keeps_it() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        epoch = (await conn.log.bounds("x")).epoch
        world.failover()
        await world.clock.sleep(1.0)
        assert (await conn.log.bounds("x")).epoch == epoch

    run_script(script, backend={"replicas": 1, "epoch_visible": False, "failover_window": "0s"})


def test_reset_drops_subscription_then_resubscribes_and_reports_loss() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        got: list[str] = []
        losses: list[LossWindow] = []
        sub = await conn.pubsub.subscribe(["c"], lambda ch, m: got.append(m), on_loss=losses.append)
        await conn.pubsub.publish("c", "before")
        await world.clock.sleep(0.1)
        conn.reset()
        assert _healthy(sub) is False
        other = world.nodes[1].conn
        assert other is not None
        await other.pubsub.publish("c", "during")  # nobody is subscribed at the server
        await world.clock.sleep(2.0)
        assert _healthy(sub) is True
        assert len(losses) == 1
        await other.pubsub.publish("c", "after")
        await world.clock.sleep(0.1)
        assert got == ["before", "after"]

    run_script(script)


def test_short_partition_holds_pushes_long_one_resets() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        other = world.nodes[1].conn
        assert conn is not None
        assert other is not None
        got: list[str] = []
        losses: list[LossWindow] = []
        await conn.pubsub.subscribe(["c"], lambda ch, m: got.append(m), on_loss=losses.append)
        link = node.link
        link.partitioned = True
        link.partition_gen += 1
        await other.pubsub.publish("c", "held")
        await world.clock.sleep(0.5)
        assert got == []
        world.unpartition(node, link.partition_gen)
        await world.clock.sleep(0.1)
        assert got == ["held"]
        link.partitioned = True
        link.partition_gen += 1
        world.later(
            world.loop.time() + link.params.keepalive,
            world.keepalive_expired,
            node,
            link.partition_gen,
        )
        await other.pubsub.publish("c", "lost")
        await world.clock.sleep(link.params.keepalive + 0.5)
        world.unpartition(node, link.partition_gen)
        await world.clock.sleep(3.0)
        assert got == ["held"]
        assert len(losses) == 1

    run_script(script)


def test_pause_delays_the_instance_not_the_world() -> None:
    async def script(world: World, node: SimNode) -> None:
        other = world.nodes[1]
        seen: list[float] = []

        async def ticker() -> None:
            while True:
                await other.rt().clock.sleep(0.5)
                seen.append(world.loop.time())

        assert other.conn is not None
        other.spawn_system(ticker())
        await world.clock.sleep(1.1)
        other.pause()
        await world.clock.sleep(3.0)
        paused_ticks = [t for t in seen if 1.2 < t < 4.0]
        other.resume()
        await world.clock.sleep(1.0)
        assert paused_ticks == []
        assert any(t > 4.0 for t in seen)

    run_script(script)


def test_duplicate_applies_twice_and_returns_the_second_reply() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        node.link.duplicate = 1.0
        assert await conn.kv.incr("n") == 2
        node.link.duplicate = 0.0
        assert await conn.kv.get("n") == "2"

    run_script(script)


def test_backend_restart_loses_everything_and_changes_the_epoch() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        await conn.log.append("l", "e", "{}", max_size=10)
        epoch = (await conn.log.bounds("l")).epoch
        world.backend_restart()
        bounds = await conn.log.bounds("l")
        assert bounds.newest == 0
        assert bounds.epoch != epoch

    run_script(script)


def test_session_lock_is_released_when_the_holder_crashes() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        other = world.nodes[1]
        assert conn is not None
        assert other.conn is not None
        taken = await other.conn.locks.try_session_lock("leader")
        assert taken is not None
        assert await conn.locks.try_session_lock("leader") is None
        other.crash()
        assert await conn.locks.try_session_lock("leader") is not None

    run_script(script)
