"""A simulated uwsx instance: its incarnations, clock, link and connection.

Each incarnation runs in its own root task whose context carries the incarnation's
:class:`~uwsx_sim.loop.NodeRef` (so every task it spawns inherits the tag) and its own
:class:`uwsx._runtime.Runtime`: the node's skewed, drifting :class:`~uwsx_sim.clock.SimClock`,
ids and randomness from the node's seeded streams, and the run's BUGGIFY sites.

* **crash**: the link is severed (nothing sent afterwards arrives, the backend drops the
  connection's subscriptions and session locks), the incarnation is marked dead so none of its
  callbacks runs again, and its tasks wait in the graveyard. No cleanup reaches the backend.
* **restart**: a fresh incarnation: new instance ids, empty local state, same clock hardware.
* **pause**: the incarnation's callbacks are parked while the world moves on; requests already
  on the wire still arrive, replies and timers wait (a stop-the-world GC pause, ``SIGSTOP``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from uwsx import _runtime
from uwsx._runtime import Runtime
from uwsx._runtime.ids import SeededIds
from uwsx_sim.clock import Rng, SimClock
from uwsx_sim.loop import DEAD, NODE, PAUSED, NodeRef
from uwsx_sim.net import Link

if TYPE_CHECKING:
    import asyncio

    from uwsx_sim.model.client import SimConnection
    from uwsx_sim.world import World

__all__ = ["SimNode"]


class SimNode:
    """One instance slot (``n0``, ``n1``...) across its incarnations."""

    def __init__(self, world: World, index: int, clock: SimClock, link: Link) -> None:
        self.world = world
        self.index = index
        self.name = f"n{index}"
        self.clock = clock
        self.link = link
        self.incarnation = 0
        self.ref = NodeRef(self.name, 0)
        self.ref.state = DEAD
        self.conn: SimConnection | None = None
        self.runtime: Runtime | None = None
        self.root: asyncio.Task[Any] | None = None
        #: every incarnation's root task (checked for errors at the end of the run)
        self.roots: list[asyncio.Task[Any]] = []
        #: context of system callbacks (replies, pushes) and tasks (reconnect) of this incarnation
        self.reply_ctx = contextvars.Context()
        self.spawn_ctx = contextvars.Context()
        #: virtual time of the last crash and restart (checkers use them)
        self.crashed_at: list[float] = []
        self.started_at: list[float] = []

    @property
    def up(self) -> bool:
        return self.ref.state != DEAD

    @property
    def paused(self) -> bool:
        return self.ref.state == PAUSED

    def start(self) -> None:
        """Boot a new incarnation."""
        world = self.world
        self.incarnation += 1
        ref = NodeRef(self.name, self.incarnation)
        self.ref = ref
        tag = f"{self.name}#{self.incarnation}"
        rt = Runtime(
            clock=self.clock,
            ids=SeededIds(world.stream(f"ids:{tag}")),
            random=world.stream(f"random:{tag}"),
            name=tag,
            buggify_sites=world.buggify,
        )
        self.runtime = rt
        ctx = contextvars.Context()
        ctx.run(NODE.set, ref)
        ref.context = ctx
        self.started_at.append(world.loop.time())
        world.trace.event(
            world.loop.time(), self.name, "^", f"start incarnation {self.incarnation}"
        )
        self.root = world.loop.create_task(self._main(ref, rt), context=ctx.copy())
        self.roots.append(self.root)

    async def _main(self, ref: NodeRef, rt: Runtime) -> None:
        with _runtime.use(rt):
            # replies, pushes and simulator-owned tasks of this incarnation run in copies of
            # this context: tagged with the incarnation, its runtime installed
            self.reply_ctx = contextvars.copy_context()
            self.spawn_ctx = contextvars.copy_context()
            await self._run(ref)

    async def _run(self, ref: NodeRef) -> None:
        conn = await self.world.open_connection(self)
        if ref is not self.ref:
            return
        self.conn = conn
        await self.world.run_instance(self)

    def spawn_system(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a simulator-owned task (the adapter's reconnect loop) as part of this node."""
        self.world.loop.create_task(coro, context=self.spawn_ctx.copy())

    def crash(self) -> None:
        if not self.up:
            return
        loop = self.world.loop
        self.world.trace.event(loop.time(), self.name, "!", f"crash incarnation {self.incarnation}")
        if self.conn is not None:
            self.conn.sever()
        loop.kill(self.ref)
        self.world.graveyard.append(self.ref)
        self.crashed_at.append(loop.time())
        self.conn = None

    def restart(self) -> None:
        if self.up:
            return
        self.start()

    def pause(self) -> None:
        if self.ref.state == PAUSED or not self.up:
            return
        self.world.loop.pause(self.ref)

    def resume(self) -> None:
        if self.ref.state != PAUSED:
            return
        self.world.trace.event(self.world.loop.time(), self.name, "~", "resume")
        self.world.loop.resume(self.ref)

    def rt(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime


def node_rng(world: World, node: SimNode, name: str) -> Rng:
    return world.stream(f"{name}:{node.name}")
