"""``uwsx.connect("sim://name")``: the backend model behind a simulated link.

* Inside a simulator run, from an instance's task: a new connection of that instance (its link,
  its incarnation), so feature code may open extra clients exactly as it would in production.
* Anywhere else on a :class:`~uwsx_sim.loop.SimLoop` (the contract suite's sim arm, feature
  tests): every open of one name on one loop shares a fault-free backend model, and each open
  is its own client with its own link. This is how the port contract suite checks that the
  model keeps every promise of the ports before any fault is injected.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from uwsx.memory import MemoryBackend
from uwsx_sim.clock import Rng, SimClock
from uwsx_sim.history import Trace
from uwsx_sim.loop import NODE, NodeRef, SimLoop
from uwsx_sim.model.client import SimConnection
from uwsx_sim.model.replication import BackendModel
from uwsx_sim.net import Link, LinkParams

__all__ = ["Standalone", "open_backend"]


class _Client:
    """A client endpoint of a standalone model: never crashes, never pauses."""

    def __init__(self, host: Standalone, index: int) -> None:
        self.name = f"client{index}"
        self.incarnation = 1
        self.ref = NodeRef(self.name, 1)
        self.link = Link(host.link_params, Rng.stream(host.seed, f"net:{self.name}"))
        self.clock = host.clock
        ctx = contextvars.copy_context()
        ctx.run(NODE.set, self.ref)
        self.reply_ctx = ctx
        self._loop = host.loop

    def spawn_system(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._loop.create_task(coro, context=self.reply_ctx.copy())


class Standalone:
    """A fault-free backend model shared by the ``sim://name`` opens on one loop."""

    def __init__(self, name: str, loop: SimLoop, seed: int = 0) -> None:
        self.name = name
        self.seed = seed
        self._loop = loop
        self.clock = SimClock(loop.time)
        self.model = BackendModel(f"sim-standalone-{name}", self.clock, Rng.stream(seed, name))
        self.trace = Trace()
        self.context = contextvars.copy_context()
        self.backend_ops = 0
        self.link_params = LinkParams()
        self.clients = 0

    @property
    def loop(self) -> SimLoop:
        return self._loop

    def observe(
        self, conn: SimConnection, label: str, record: Any, value: Any, at: float, serial: int
    ) -> None:
        """No checkers listen to a standalone model."""

    def connect(self, key_prefix: str) -> SimConnection:
        self.clients += 1
        inner = MemoryBackend(self.model.primary, key_prefix=key_prefix)
        return SimConnection(self, _Client(self, self.clients), inner, key_prefix)


_STANDALONE: weakref.WeakKeyDictionary[SimLoop, dict[str, Standalone]] = weakref.WeakKeyDictionary()


async def open_backend(target: object, *, key_prefix: str = "", **options: Any) -> SimConnection:
    """The factory registered for ``sim://`` (see the module docstring)."""
    if options:
        raise TypeError(f"unexpected options for the sim backend: {sorted(options)}")
    if not isinstance(target, str) or urlsplit(target).scheme != "sim":
        raise ValueError(f"not a sim URL: {target!r}")
    loop = asyncio.get_running_loop()
    if not isinstance(loop, SimLoop):
        raise RuntimeError(  # noqa: TRY004 - wrong environment, not a wrong argument
            "sim:// backends exist only on the simulator's loop (uwsx_sim.SimLoop); "
            "use memory:// outside a simulation"
        )
    from uwsx_sim.world import CURRENT_WORLD

    world = CURRENT_WORLD.get()
    ref = NODE.get()
    if world is not None and ref is not None:
        node = world.nodes[int(ref.node[1:])]
        if node.ref is ref:
            return await world.open_connection(node, key_prefix=key_prefix or None)
    name = urlsplit(target).netloc or "default"
    models = _STANDALONE.setdefault(loop, {})
    host = models.get(name)
    if host is None:
        host = models[name] = Standalone(name, loop, seed=loop.seed)
    return host.connect(key_prefix)
