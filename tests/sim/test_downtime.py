"""A restarting backend refuses connections for the nemesis's downtime: calls fail fast with
``Unavailable`` (nothing applied), subscriptions retry with backoff and report the outage as
their loss window, and a failover or the heal phase ends it."""

from __future__ import annotations

import pytest

from uwsx.errors import Unavailable
from uwsx.ports.pubsub import LossWindow
from uwsx_sim.node import SimNode
from uwsx_sim.world import World

from .probe import run_script, until

pytestmark = pytest.mark.usefixtures("probe")


def test_calls_are_refused_until_the_backend_is_back() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        got: list[str] = []
        losses: list[LossWindow] = []
        await conn.pubsub.subscribe(["ch"], lambda _c, m: got.append(m), on_loss=losses.append)
        await conn.kv.set("kept", "1")
        await until(world, 1.0)
        crashed = node.clock.wall()
        world.backend_restart(2.0)
        sent = world.loop.time()
        with pytest.raises(Unavailable, match="refused"):
            await conn.kv.set("refused", "1")
        assert world.loop.time() - sent < 0.1  # refused after a round trip, not a timeout
        await until(world, 2.9)
        with pytest.raises(Unavailable):
            await conn.kv.incr("n")
        await until(world, 3.0)
        assert await conn.kv.incr("n") == 1  # the refused incr was never applied
        assert await conn.kv.get("refused") is None
        assert await conn.kv.get("kept") == "1"  # aof-always kept it
        await until(world, 8.0)  # the subscription's backoff has reached the server again
        assert len(losses) == 1
        assert losses[0].started <= crashed
        assert losses[0].ended >= crashed + 2.0  # the window covers the whole outage
        await conn.pubsub.publish("ch", "after")
        await world.clock.sleep(0.1)
        assert got == ["after"]

    run_script(script, backend={"persistence": "aof-always"})


def test_a_failover_ends_the_downtime() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        await until(world, 1.0)
        world.backend_restart(60.0)
        with pytest.raises(Unavailable):
            await conn.kv.set("a", "1")
        world.failover()  # the replica on another machine takes over
        await world.clock.sleep(1.0)
        await conn.kv.set("a", "1")
        assert await conn.kv.get("a") == "1"

    run_script(
        script, backend={"replicas": 1, "replication_lag": "10ms", "failover_window": "500ms"}
    )
