"""Human-readable reports: verdict table, fault timeline, coverage, failure and reproduce lines."""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
from pathlib import Path
from typing import TextIO

from uwsx_sim.nemesis import Fault
from uwsx_sim.runner import Exploration, RunResult

__all__ = [
    "failure_line",
    "git_commit",
    "render_exploration",
    "render_run",
    "reproduce_command",
    "write_artifacts",
]


def git_commit() -> str:
    """Short commit of the source tree, or ``unknown`` outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def reproduce_command(
    scenario: str,
    seed: int,
    *,
    mutant: str | None = None,
    faults_file: Path | None = None,
    instances: int | None = None,
    duration: str | None = None,
) -> str:
    parts = ["uwsx", "sim", "replay", scenario, "--seed", hex(seed)]
    if mutant:
        parts += ["--mutant", mutant]
    if instances is not None:
        parts += ["--instances", str(instances)]
    if duration is not None:
        parts += ["--duration", duration]
    if faults_file is not None:
        parts += ["--faults", str(faults_file)]
    return shlex.join(parts)


def failure_line(result: RunResult) -> str:
    first = result.first_failure()
    assert first is not None
    t = "-" if first.time is None else f"{first.time:.3f}s"
    return (
        f"FAIL {result.scenario} seed={hex(result.seed)} commit={git_commit()} "
        f"py={platform.python_version()} invariant={first.invariant} t={t}"
        + (f" mutant={result.mutant}" if result.mutant else "")
    )


def _fault_summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items())) or "none"


def render_run(
    result: RunResult, out: TextIO, *, wall: float | None = None, timeline_limit: int = 40
) -> None:
    w = out.write
    w(
        f"uwsx sim  scenario={result.scenario}  seed={hex(result.seed)} ({result.seed})"
        + (f"  mutant={result.mutant}" if result.mutant else "")
        + "\n"
    )
    stats = (
        f"virtual {result.virtual_time:.3f}s  backend ops {result.backend_ops}  "
        f"history ops {result.history_ops}  loop handles {result.handles}"
    )
    if wall is not None and wall > 0:
        stats += f"  wall {wall:.2f}s ({result.virtual_time / wall:.0f}x real time)"
    w(stats + "\n")
    w(f"faults: {_fault_summary(result.fault_counts)}\n\n")
    w(f"{'invariant':<10} {'verdict':<7} {'checked':>8}  statement / detail\n")
    for v in result.verdicts:
        verdict = "PASS" if v.ok else "FAIL"
        w(f"{v.invariant:<10} {verdict:<7} {v.checked:>8}  {v.description}\n")
        if not v.ok:
            at = "" if v.time is None else f" at t={v.time:.3f}s"
            w(f"{'':<28}-> {v.detail}{at}\n")
        for key, value in v.extra.items():
            w(f"{'':<28}   {key}: {value}\n")
    if result.probes:
        w("\ncoverage (sometimes):\n")
        for probe, n in sorted(result.probes.items()):
            w(f"  {probe}: {n}\n")
    w("\nfault timeline:\n")
    shown = result.timeline[:timeline_limit]
    for t, node, symbol, text in shown:
        w(f"  {t:10.3f}s  {node:<4} {symbol}  {text}\n")
    if len(result.timeline) > len(shown):
        w(f"  ... {len(result.timeline) - len(shown)} more events\n")
    w(f"\ntrace hash: {result.trace_hash}\n")
    if result.ok:
        w("RESULT: PASS\n")
    else:
        w(failure_line(result) + "\n")
        w(
            "reproduce: "
            + reproduce_command(result.scenario, result.seed, mutant=result.mutant)
            + "\n"
        )


def render_exploration(ex: Exploration, out: TextIO, *, faults_file: Path | None = None) -> None:
    w = out.write
    if ex.failure is None:
        w(f"explored {ex.seeds_run} seeds: no violation ({ex.rechecked} re-run for determinism)\n")
        if ex.probes:
            w("coverage (sometimes) over the batch:\n")
            for probe, n in sorted(ex.probes.items()):
                w(f"  {probe}: {n}\n")
        for probe in ex.silent_probes:
            w(f"UNDER-EXPLORING: the probe {probe!r} never fired in this batch\n")
        return
    result = ex.failure
    first = result.first_failure()
    assert first is not None
    w(f"violation after {ex.seeds_run} seeds\n")
    w(failure_line(result) + "\n")
    w(f"  {first.invariant}: {first.description}\n  -> {first.detail}\n")
    if not ex.deterministic:
        w(
            f"NONDETERMINISTIC: rerun hash {ex.rerun_hash} != {result.trace_hash}: "
            "this is a simulator bug, not a feature bug\n"
        )
    w("reproduce: " + reproduce_command(result.scenario, result.seed, mutant=result.mutant) + "\n")
    if ex.shrunk is not None:
        w(f"shrunk fault schedule: {len(result.faults)} -> {len(ex.shrunk)} faults\n")
        for f in ex.shrunk:
            w(f"  {f.at:10.3f}s  {f.describe()}\n")
        if faults_file is not None:
            w(
                "reproduce minimal: "
                + reproduce_command(
                    result.scenario, result.seed, mutant=result.mutant, faults_file=faults_file
                )
                + "\n"
            )


def write_artifacts(result: RunResult, directory: Path, shrunk: list[Fault] | None) -> Path | None:
    """history.jsonl, trace.txt, faults.json and minimal/faults.json; returns the minimal file."""
    directory.mkdir(parents=True, exist_ok=True)
    if result.world is not None:
        result.world.history.write_jsonl(directory / "history.jsonl")
        result.world.history.write_edn(directory / "history.edn")
    with (directory / "trace.txt").open("w", encoding="utf-8") as fh:
        for t, node, symbol, text in result.timeline:
            fh.write(f"{t:12.6f} {node:<4} {symbol} {text}\n")
    (directory / "faults.json").write_text(
        json.dumps([f.as_json() for f in result.faults], indent=1), encoding="utf-8"
    )
    (directory / "report.json").write_text(json.dumps(result.as_json(), indent=1), encoding="utf-8")
    if shrunk is None:
        return None
    minimal = directory / "minimal"
    minimal.mkdir(exist_ok=True)
    path = minimal / "faults.json"
    path.write_text(json.dumps([f.as_json() for f in shrunk], indent=1), encoding="utf-8")
    return path
