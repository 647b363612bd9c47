"""The workload interface: how a feature is driven on every instance and checked afterwards.

A workload is built once per run from its ``[[workload]]`` table. For every incarnation of
every instance the world calls :meth:`Workload.run_instance` inside that incarnation's root task
(its runtime installed, its :class:`~uwsx_sim.model.client.SimConnection` in ``node.conn``): the
workload constructs the real feature objects there and drives them, recording each operation in
the history. Crashes cancel nothing politely: the incarnation simply stops running.

After the liveness phase :meth:`final` may take last observations, and :meth:`check` turns the
history into one :class:`Verdict` per invariant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from uwsx.errors import Indeterminate, Unavailable
from uwsx_sim.clock import Rng
from uwsx_sim.history import History, Op
from uwsx_sim.scenario import parse_duration, pick

if TYPE_CHECKING:
    from uwsx_sim.model.client import SimConnection
    from uwsx_sim.node import SimNode
    from uwsx_sim.world import World

__all__ = ["Verdict", "Workload"]

_T = TypeVar("_T")


@dataclass(slots=True)
class Verdict:
    """The outcome of one invariant over one run."""

    invariant: str
    description: str
    ok: bool
    checked: int = 0
    detail: str = ""
    #: virtual time of the first violation
    time: float | None = None
    #: "safety" or "liveness"
    kind: str = "safety"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "description": self.description,
            "ok": self.ok,
            "checked": self.checked,
            "detail": self.detail,
            "time": self.time,
            "kind": self.kind,
            **({"extra": self.extra} if self.extra else {}),
        }


class Workload:
    """Base class; subclasses set :attr:`feature` and :attr:`invariants`."""

    feature: ClassVar[str] = ""
    #: invariant id -> one-line statement (shown by ``uwsx sim list`` and in reports)
    invariants: ClassVar[dict[str, str]] = {}
    #: coverage probes (:meth:`sometimes`) a healthy seed batch must reach; a batch where one
    #: never fired is reported as under-exploring
    expected_probes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, world: World, spec: dict[str, Any], rng: Rng) -> None:
        self.world = world
        self.spec = spec
        self.rng = rng
        self.history: History = world.history
        self.phase = "chaos"
        self.probes: dict[str, int] = {}

    # -- knobs ---------------------------------------------------------------------
    def knob(self, name: str, default: object) -> float:
        """A duration knob; ranges are chosen once per run (swarm)."""
        return pick(self.rng.split(f"knob:{name}"), self.spec.get(name, default))

    def int_knob(self, name: str, default: int) -> int:
        return int(self.spec.get(name, default))

    def duration(self, name: str, default: str) -> float:
        return parse_duration(self.spec.get(name, default))

    # -- hooks ---------------------------------------------------------------------
    async def run_instance(self, node: SimNode) -> None:
        """Drive the feature on one incarnation (runs until the incarnation ends)."""
        raise NotImplementedError

    def on_phase(self, phase: str) -> None:
        self.phase = phase

    def observe(
        self, conn: SimConnection, label: str, record: Any, value: Any, at: float, serial: int
    ) -> None:
        """Ground truth: called at the backend for every successfully applied port op."""

    async def final(self) -> None:
        """Last observations after the liveness phase (the world is still running)."""

    def check(self) -> list[Verdict]:
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------
    def sometimes(self, probe: str) -> None:
        """Coverage probe: count that an interesting situation was reached."""
        self.probes[probe] = self.probes.get(probe, 0) + 1

    def now(self) -> float:
        return self.world.loop.time()

    async def record(
        self,
        node: SimNode,
        process: str,
        f: str,
        value: Any,
        call: Callable[[], Awaitable[_T]],
        *,
        ok_value: Callable[[_T], Any] | None = None,
    ) -> tuple[str, _T | None, Op]:
        """Invoke ``call`` and record invoke + ok/fail/info. Indeterminate (and any error the
        feature surfaces for a lost reply) is ``info``; Unavailable is ``fail``."""
        inv = self.history.invoke(node.name, node.incarnation, process, f, value, self.now())
        try:
            result = await call()
        except Indeterminate as exc:
            op = self.history.complete(inv, "info", repr(exc), self.now())
            return "info", None, op
        except Unavailable as exc:
            op = self.history.complete(inv, "fail", repr(exc), self.now())
            return "fail", None, op
        shown = ok_value(result) if ok_value is not None else result
        op = self.history.complete(inv, "ok", shown, self.now())
        return "ok", result, op
