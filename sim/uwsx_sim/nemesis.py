"""Faults: what they do, how a schedule is drawn from the seed, and how the heal phase ends them.

A run's faults are a list of :class:`Fault` values fixed before the run starts, drawn from the
``faults`` stream (one child stream per ``[[nemesis]]`` entry). Shrinking deletes faults from
that list and re-runs: every other stream is independent, so the rest of the run stays put.

=============== =============================================================================
kind            effect (``target`` is an instance index; ``duration`` seconds)
=============== =============================================================================
crash           the instance dies (no cleanup reaches the backend); restarts after duration
pause           the instance's callbacks are parked for duration (GC pause, SIGSTOP)
partition       instance <-> backend blackholed for duration; longer than keepalive resets
reset           the instance's connection drops once (subscriptions lost, session locks freed)
clock-step      the instance's wall clock jumps by ``value`` seconds (stays until heal)
clock-drift     the instance's clocks run at rate ``value`` for duration
loss            drop_request = drop_reply = ``value`` on the instance's link for duration
latency         the instance's link latency is multiplied by ``value`` for duration
failover        the backend promotes a replica, losing its unreplicated writes
backend-restart the backend crashes and restarts with what its ``persistence`` mode kept,
                refusing connections for duration (no downtime unless the nemesis sets one)
=============== =============================================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from uwsx_sim.clock import Rng
from uwsx_sim.scenario import parse_duration, parse_range, pick

if TYPE_CHECKING:
    from uwsx_sim.world import World

__all__ = ["KINDS", "Fault", "apply_fault", "draw_schedule", "heal_all"]

KINDS = (
    "crash",
    "pause",
    "partition",
    "reset",
    "clock-step",
    "clock-drift",
    "loss",
    "latency",
    "failover",
    "backend-restart",
)
_GLOBAL = frozenset({"failover", "backend-restart"})
_DEFAULT_VALUE: dict[str, object] = {
    "clock-step": "-2s..2s",
    "clock-drift": "0.9..1.1",
    "loss": "0.05..0.5",
    "latency": "5..50",
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One scheduled fault."""

    at: float
    kind: str
    target: int | None
    duration: float = 0.0
    value: float = 0.0

    def describe(self) -> str:
        who = "backend" if self.target is None else f"n{self.target}"
        parts = [f"{self.kind} {who}"]
        if self.duration:
            parts.append(f"for {self.duration:.3f}s")
        if self.kind in ("clock-step", "clock-drift", "loss", "latency"):
            parts.append(f"value={self.value:g}")
        return " ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        return cls(
            float(data["at"]),
            str(data["kind"]),
            data.get("target"),
            float(data.get("duration", 0.0)),
            float(data.get("value", 0.0)),
        )


def _targets(spec: dict[str, Any], rng: Rng, instances: int) -> list[int]:
    mode = str(spec.get("targets", "one"))
    if mode == "one":
        return [rng.randint(0, instances - 1)]
    if mode == "all":
        return list(range(instances))
    if mode == "minority":
        k = max(1, (instances - 1) // 2)
        return sorted(rng.sample(range(instances), rng.randint(1, k)))
    if mode.startswith("n") and mode[1:].isdigit():
        return [int(mode[1:]) % instances]
    raise ValueError(f"unknown nemesis targets {mode!r} (one, all, minority, nK)")


def draw_schedule(
    nemeses: list[dict[str, Any]], rng: Rng, *, instances: int, chaos: float, swarm: bool
) -> list[Fault]:
    """Every fault of the chaos phase, sorted by time."""
    faults: list[Fault] = []
    enabled = list(range(len(nemeses)))
    if swarm and nemeses:
        pick_rng = rng.split("swarm")
        enabled = [i for i in enabled if pick_rng.chance(0.6)] or [
            pick_rng.randint(0, len(nemeses) - 1)
        ]
    for i in enabled:
        spec = nemeses[i]
        kind = str(spec.get("kind", ""))
        if kind not in KINDS:
            raise ValueError(f"unknown nemesis kind {kind!r}; known: {', '.join(KINDS)}")
        r = rng.split(f"nemesis{i}")
        every_lo, every_hi = parse_range(spec.get("every", "5s..15s"))
        if swarm and every_hi > every_lo:
            # swarm: the seed picks this nemesis's intensity, then gaps vary around it
            mean = r.uniform(every_lo, every_hi)
            every_lo, every_hi = mean * 0.5, mean * 1.5
        t = parse_duration(spec.get("start", 0.0)) + r.uniform(every_lo, every_hi)
        count = int(spec.get("count", 10**6))
        while t < chaos and count > 0:
            count -= 1
            duration = pick(r, spec.get("duration", "1s..5s"))
            value = pick(
                r, spec.get("value", _DEFAULT_VALUE.get(kind, 0.0)), duration=kind == "clock-step"
            )
            if kind in _GLOBAL:
                # a backend restart's duration is its downtime; it has none unless asked for
                down = duration if kind == "backend-restart" and "duration" in spec else 0.0
                faults.append(Fault(round(t, 6), kind, None, round(down, 6), 0.0))
            else:
                faults.extend(
                    Fault(round(t, 6), kind, target, round(duration, 6), round(value, 6))
                    for target in _targets(spec, r, instances)
                )
            t += r.uniform(every_lo, every_hi)
    faults.sort(key=lambda f: (f.at, KINDS.index(f.kind), -1 if f.target is None else f.target))
    return faults


def apply_fault(world: World, fault: Fault) -> None:
    """Start ``fault`` now and schedule its end."""
    loop = world.loop
    end = loop.time() + fault.duration
    who = "*" if fault.target is None else f"n{fault.target}"
    world.trace.event(loop.time(), who, _SYMBOL.get(fault.kind, "?"), fault.describe())
    world.fault_counts[fault.kind] = world.fault_counts.get(fault.kind, 0) + 1
    if fault.kind == "failover":
        world.failover()
        return
    if fault.kind == "backend-restart":
        world.backend_restart(fault.duration)
        return
    assert fault.target is not None
    node = world.nodes[fault.target]
    link = node.link
    if fault.kind == "crash":
        node.crash()
        world.later(end, node.restart)
    elif fault.kind == "pause":
        node.pause()
        world.later(end, node.resume)
    elif fault.kind == "partition":
        link.partitioned = True
        link.partition_gen += 1
        gen = link.partition_gen
        world.later(loop.time() + link.params.keepalive, world.keepalive_expired, node, gen)
        world.later(end, world.unpartition, node, gen)
    elif fault.kind == "reset":
        if node.conn is not None:
            node.conn.reset()
    elif fault.kind == "clock-step":
        node.clock.step_wall(fault.value)
    elif fault.kind == "clock-drift":
        node.clock.set_rate(fault.value)
        world.later(end, node.clock.set_rate, 1.0)
    elif fault.kind == "loss":
        link.drop_request = link.drop_reply = fault.value
        world.later(end, _restore_loss, node)
    elif fault.kind == "latency":
        link.latency_factor = fault.value
        world.later(end, _restore_latency, node)


def _restore_loss(node: Any) -> None:
    node.link.drop_request = node.link.params.drop_request
    node.link.drop_reply = node.link.params.drop_reply


def _restore_latency(node: Any) -> None:
    node.link.latency_factor = 1.0


def heal_all(world: World) -> None:
    """Jepsen's final generator: end every fault so the liveness phase starts clean."""
    world.trace.event(world.loop.time(), "*", "+", "heal")
    world.model.down_until = 0.0  # a restarting backend is up
    for node in world.nodes:
        gen = node.link.partition_gen
        was_partitioned = node.link.partitioned
        node.link.heal()
        if was_partitioned:
            world.unpartition(node, gen)
        node.resume()
        node.clock.set_rate(1.0)
        node.clock.step_wall(world.base_skew[node.index] - node.clock.skew())
        if not node.up:
            node.restart()


_SYMBOL = {
    "crash": "!",
    "pause": "~",
    "partition": "x",
    "reset": "r",
    "clock-step": "c",
    "clock-drift": "c",
    "loss": "l",
    "latency": "l",
    "failover": "F",
    "backend-restart": "B",
}
