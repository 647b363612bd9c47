"""Running a scenario: one seed, many seeds (explore), the determinism self-check, shrinking.

A failing seed is always run a second time before it is reported: if the two trace hashes
differ, the failure is reported as a simulator bug (nondeterminism), never as a feature bug.
Shrinking is ddmin over the fault schedule: faults are deleted and the seed re-run with the
remaining explicit schedule while the same invariant still fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uwsx_sim.clock import derive_seed
from uwsx_sim.loop import Deadlock, SimLoop
from uwsx_sim.mutants import applied_mutant
from uwsx_sim.nemesis import Fault
from uwsx_sim.scenario import Scenario
from uwsx_sim.workloads.base import Verdict
from uwsx_sim.world import World

__all__ = ["RunResult", "explore", "run_seed", "shrink"]


@dataclass(slots=True)
class RunResult:
    """What one seed produced."""

    scenario: str
    seed: int
    trace_hash: str
    verdicts: list[Verdict]
    faults: list[Fault]
    timeline: list[tuple[float, str, str, str]]
    virtual_time: float
    backend_ops: int
    handles: int
    history_ops: int
    fault_counts: dict[str, int]
    probes: dict[str, int]
    mutant: str | None = None
    world: World | None = field(default=None, repr=False)

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    def first_failure(self) -> Verdict | None:
        failed = self.failed
        if not failed:
            return None
        return min(failed, key=lambda v: (v.time is None, v.time or 0.0))

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "seed_hex": hex(self.seed),
            "ok": self.ok,
            "trace_hash": self.trace_hash,
            "mutant": self.mutant,
            "virtual_time": self.virtual_time,
            "backend_ops": self.backend_ops,
            "loop_handles": self.handles,
            "history_ops": self.history_ops,
            "verdicts": [v.as_json() for v in self.verdicts],
            "faults": [f.as_json() for f in self.faults],
            "fault_counts": self.fault_counts,
            "probes": self.probes,
            "timeline": [
                {"time": t, "node": n, "symbol": s, "event": e} for t, n, s, e in self.timeline
            ],
        }


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """Feature code logs expected failures (lost replies, crashed peers); keep runs quiet."""
    logger = logging.getLogger("uwsx")
    sim_logger = logging.getLogger("uwsx_sim")
    old = logger.level, sim_logger.level
    logger.setLevel(logging.CRITICAL)
    sim_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old[0])
        sim_logger.setLevel(old[1])


def run_seed(
    scenario: Scenario,
    seed: int,
    *,
    faults: list[Fault] | None = None,
    mutant: str | None = None,
    history_path: Path | None = None,
    keep_world: bool = False,
) -> RunResult:
    """Run one seed of ``scenario`` to completion and check every invariant."""
    mutant = mutant if mutant is not None else scenario.mutant
    with applied_mutant(mutant), _quiet_logging():
        world = World(scenario, seed, faults=faults)
        loop_seed = derive_seed(seed, "sched")
        with asyncio.Runner(loop_factory=SimLoop.factory(loop_seed)) as runner:
            loop = runner.get_loop()
            assert isinstance(loop, SimLoop)
            try:
                runner.run(world.main())
            except Deadlock as exc:
                world.failure = f"deadlock: {exc}"
            except Exception as exc:  # a workload or checker crashed: report, do not die
                world.failure = f"simulator error: {exc!r}"
            virtual_time = loop.time()
            handles = loop.handles_run
        verdicts = world.check()
    if history_path is not None:
        world.history.write(history_path)
    probes: dict[str, int] = {}
    for w in world.workloads:
        for k, n in w.probes.items():
            probes[f"{w.feature}: {k}"] = n
    return RunResult(
        scenario=scenario.name,
        seed=seed,
        trace_hash=world.trace.hexdigest(),
        verdicts=verdicts,
        faults=list(world.faults),
        timeline=list(world.trace.timeline),
        virtual_time=virtual_time,
        backend_ops=world.backend_ops,
        handles=handles,
        history_ops=len(world.history),
        fault_counts=dict(world.fault_counts),
        probes=probes,
        mutant=mutant,
        world=world if keep_world else None,
    )


@dataclass(slots=True)
class Exploration:
    """Outcome of :func:`explore`."""

    seeds_run: int
    failure: RunResult | None = None
    deterministic: bool = True
    rerun_hash: str | None = None
    shrunk: list[Fault] | None = None
    probes: dict[str, int] = field(default_factory=dict)
    #: expected coverage probes that never fired in the batch (the scenario under-explores)
    silent_probes: list[str] = field(default_factory=list)
    #: a passing seed whose determinism re-run gave another trace hash (a simulator bug)
    nondeterministic_seed: int | None = None
    rechecked: int = 0


def explore(
    scenario: Scenario,
    seeds: range | list[int],
    *,
    mutant: str | None = None,
    do_shrink: bool = True,
    progress: Callable[[int, RunResult], None] | None = None,
    recheck_every: int = 20,
) -> Exploration:
    """Run seeds in order until the first violation; confirm it by a rerun and shrink it.

    Every ``recheck_every``-th passing seed is also run twice (FoundationDB's 5% unseed check):
    a differing trace hash stops the exploration as a simulator bug.
    """
    out = Exploration(0)
    for seed in seeds:
        result = run_seed(scenario, seed, mutant=mutant)
        out.seeds_run += 1
        for k, n in result.probes.items():
            out.probes[k] = out.probes.get(k, 0) + n
        if progress is not None:
            progress(out.seeds_run, result)
        if result.ok:
            if recheck_every and out.seeds_run % recheck_every == 0:
                out.rechecked += 1
                if run_seed(scenario, seed, mutant=mutant).trace_hash != result.trace_hash:
                    out.nondeterministic_seed = seed
                    out.deterministic = False
                    break
            continue
        out.failure = result
        again = run_seed(scenario, seed, mutant=mutant)
        out.rerun_hash = again.trace_hash
        out.deterministic = again.trace_hash == result.trace_hash
        if out.deterministic and do_shrink:
            out.shrunk = shrink(scenario, seed, result, mutant=mutant)
        break
    if out.failure is None:
        from uwsx_sim.workloads import workload_class

        for spec in scenario.workloads:
            cls = workload_class(str(spec.get("feature")))
            # a scenario may name the probes its configuration must reach instead
            for probe in spec.get("expected_probes", cls.expected_probes):
                if out.probes.get(f"{cls.feature}: {probe}", 0) == 0:
                    out.silent_probes.append(f"{cls.feature}: {probe}")
    return out


def _fails_same(result: RunResult, invariant: str) -> bool:
    return any(v.invariant == invariant for v in result.failed)


def shrink(
    scenario: Scenario,
    seed: int,
    failing: RunResult,
    *,
    mutant: str | None = None,
    max_runs: int = 60,
) -> list[Fault]:
    """ddmin over the fault schedule: the smallest subset found that still fails the same
    invariant (within ``max_runs`` re-runs)."""
    first = failing.first_failure()
    assert first is not None
    invariant = first.invariant
    faults = [f for f in failing.faults if f.at < scenario.duration]
    runs = 0

    def still_fails(candidate: list[Fault]) -> bool:
        nonlocal runs
        runs += 1
        return _fails_same(run_seed(scenario, seed, faults=candidate, mutant=mutant), invariant)

    if still_fails([]):
        return []
    n = 2
    while len(faults) >= 2 and runs < max_runs:
        chunk = max(1, len(faults) // n)
        reduced = False
        for start in range(0, len(faults), chunk):
            if runs >= max_runs:
                break
            complement = faults[:start] + faults[start + chunk :]
            if complement and still_fails(complement):
                faults = complement
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            if n >= len(faults):
                break
            n = min(len(faults), n * 2)
    return faults
