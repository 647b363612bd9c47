"""``uwsx sim``: list, run, explore and replay scenarios.

The same commands work as ``python -m uwsx_sim ...``. Before running anything the command makes
sure ``PYTHONHASHSEED`` is fixed (it re-executes itself with ``PYTHONHASHSEED=0`` otherwise),
so a seed gives the same trace hash in every process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from uwsx_sim.clock import parse_seed, wall_seconds
from uwsx_sim.mutants import MUTANTS, _load_feature_mutants
from uwsx_sim.nemesis import Fault
from uwsx_sim.report import render_exploration, render_run, reproduce_command, write_artifacts
from uwsx_sim.runner import RunResult, explore, run_seed
from uwsx_sim.scenario import Scenario, find_scenario, list_scenarios, parse_duration
from uwsx_sim.workloads import workload_class

__all__ = ["configure", "main", "run"]

HASH_SEED = "0"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``sim`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    sub.add_parser("list", help="list scenarios, their invariants and the planted mutants")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("scenario", help="scenario name (see `uwsx sim list`) or a .toml path")
        p.add_argument("--instances", type=int, default=None, help="override the instance count")
        p.add_argument("--duration", default=None, help="override the chaos phase (e.g. 10m)")
        p.add_argument("--mutant", default=None, help="run with a planted bug (see list)")

    run_p = sub.add_parser("run", help="run one seed and print the report")
    common(run_p)
    run_p.add_argument("--seed", default="1", help="seed (decimal or 0x hex)")
    run_p.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    run_p.add_argument(
        "--history",
        type=Path,
        default=None,
        help="write the history (.jsonl, or .edn for Knossos/Elle)",
    )
    run_p.add_argument("--faults", type=Path, default=None, help="explicit fault schedule JSON")
    run_p.add_argument("--timeline", type=int, default=40, help="timeline lines to show")

    ex_p = sub.add_parser("explore", help="run seeds until the first violation, then shrink it")
    common(ex_p)
    ex_p.add_argument("--seeds", type=int, default=100, help="how many seeds to try")
    ex_p.add_argument("--start", default="1", help="first seed")
    ex_p.add_argument("--no-shrink", action="store_true", help="do not shrink the failure")
    ex_p.add_argument("--out", type=Path, default=None, help="directory for failure artifacts")
    ex_p.add_argument("--json", type=Path, default=None, help="write a JSON summary")
    ex_p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ex_p.add_argument("--no-corpus", action="store_true", help="do not record failing seeds")

    re_p = sub.add_parser("replay", help="re-run a seed (optionally a saved or shrunk schedule)")
    common(re_p)
    re_p.add_argument("--seed", required=True, help="seed (decimal or 0x hex)")
    re_p.add_argument("--faults", type=Path, default=None, help="fault schedule JSON to replay")
    re_p.add_argument("--expect-hash", default=None, help="fail unless the trace hash matches")
    re_p.add_argument(
        "--history",
        type=Path,
        default=None,
        help="write the history (.jsonl, or .edn for Knossos/Elle)",
    )
    re_p.add_argument("--timeline", type=int, default=40, help="timeline lines to show")


def _ensure_hash_seed(args: argparse.Namespace) -> None:
    """Re-exec with a fixed PYTHONHASHSEED (str hashing order must not vary between runs)."""
    if os.environ.get("PYTHONHASHSEED") == HASH_SEED or os.environ.get("UWSX_SIM_NO_REEXEC"):
        return
    argv = list(getattr(args, "_argv", None) or sys.argv[1:])
    if Path(sys.argv[0]).stem == "uwsx" and "sim" in argv:
        argv = argv[argv.index("sim") + 1 :]
    if not argv or argv[0] != args.sim_command:
        raise SystemExit(
            "uwsx sim: set PYTHONHASHSEED=0 (could not re-execute with a fixed hash seed)"
        )
    env = dict(os.environ, PYTHONHASHSEED=HASH_SEED)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "uwsx_sim", *argv], env)


def _scenario(args: argparse.Namespace) -> Scenario:
    sc = find_scenario(args.scenario)
    duration = parse_duration(args.duration) if args.duration else None
    return sc.with_overrides(instances=args.instances, duration=duration)


def _load_faults(path: Path | None) -> list[Fault] | None:
    if path is None:
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("faults", [])
    return [Fault.from_json(f) for f in data]


def _cmd_list() -> int:
    _load_feature_mutants()
    for sc in list_scenarios():
        kinds = ", ".join(sorted({str(n.get("kind")) for n in sc.nemeses})) or "none"
        feats = ", ".join(str(w.get("feature")) for w in sc.workloads)
        print(f"{sc.name}")
        print(f"  {sc.description}")
        print(
            f"  instances={sc.instances} duration={sc.duration:g}s workloads={feats} "
            f"nemeses={kinds}{' swarm' if sc.swarm else ''}"
        )
        for w in sc.workloads:
            try:
                cls = workload_class(str(w.get("feature")))
            except (ImportError, ValueError) as exc:
                print(f"    (workload unavailable: {exc})")
                continue
            for inv, text in cls.invariants.items():
                print(f"    {inv:<6} {text}")
    print("\nmutants (planted bugs; `uwsx sim explore SCENARIO --mutant NAME` must find them):")
    for m in sorted(MUTANTS.values(), key=lambda m: m.name):
        print(f"  {m.name:<32} {m.scenario:<18} {m.invariant:<6} {m.description}")
    return 0


def _print_report(result: RunResult, wall: float, timeline: int) -> None:
    render_run(result, sys.stdout, wall=wall, timeline_limit=timeline)


def _cmd_run(args: argparse.Namespace, *, replay: bool = False) -> int:
    sc = _scenario(args)
    seed = parse_seed(args.seed)
    faults = _load_faults(args.faults)
    started = wall_seconds()
    result = run_seed(
        sc,
        seed,
        faults=faults,
        mutant=args.mutant,
        history_path=args.history,
    )
    wall = wall_seconds() - started
    _print_report(result, wall, args.timeline)
    if not result.ok:
        # never blame a feature for what may be the simulator's nondeterminism
        again = run_seed(sc, seed, faults=faults, mutant=args.mutant)
        if again.trace_hash != result.trace_hash:
            print(
                f"NONDETERMINISTIC: the rerun's trace hash {again.trace_hash} differs: "
                "this is a simulator bug, not a feature bug"
            )
            return 3
        print("self-check: a rerun reproduced the same trace hash")
    if getattr(args, "json", None) is not None:
        args.json.write_text(json.dumps(result.as_json(), indent=1), encoding="utf-8")
    if replay and args.expect_hash and args.expect_hash != result.trace_hash:
        print(f"trace hash mismatch: expected {args.expect_hash}, got {result.trace_hash}")
        return 3
    return 0 if result.ok else 1


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.started = wall_seconds()

    def __call__(self, done: int, result: RunResult) -> None:
        if not self.enabled:
            return
        elapsed = wall_seconds() - self.started
        width = 30
        fill = int(width * done / max(1, self.total))
        rate = done / elapsed * 60 if elapsed > 0 else 0.0
        sys.stderr.write(
            f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{self.total} seeds "
            f"{rate:.0f}/min seed={hex(result.seed)} {'ok' if result.ok else 'VIOLATION'}"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _record_corpus(sc: Scenario, seed: int) -> None:
    if sc.path is None:
        return
    corpus = sc.path.parent.parent / "corpus"
    if not corpus.is_dir():
        return
    path = corpus / f"{sc.name}.txt"
    known = path.read_text(encoding="utf-8").split() if path.exists() else []
    if hex(seed) not in known:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(hex(seed) + "\n")


def _cmd_explore(args: argparse.Namespace) -> int:
    sc = _scenario(args)
    start = parse_seed(args.start)
    progress = _Progress(args.seeds, not args.no_progress and sys.stderr.isatty())
    t0 = wall_seconds()
    ex = explore(
        sc,
        range(start, start + args.seeds),
        mutant=args.mutant,
        do_shrink=not args.no_shrink,
        progress=progress,
    )
    progress.close()
    wall = wall_seconds() - t0
    faults_file = None
    if ex.failure is not None:
        out = args.out or Path("sim-artifacts") / f"{sc.name}-{ex.failure.seed:x}"
        again = run_seed(sc, ex.failure.seed, mutant=args.mutant, keep_world=True)
        faults_file = write_artifacts(again, out, ex.shrunk)
        if args.mutant is None and not args.no_corpus:
            _record_corpus(sc, ex.failure.seed)
    render_exploration(ex, sys.stdout, faults_file=faults_file)
    print(f"{ex.seeds_run} seeds in {wall:.1f}s ({ex.seeds_run / wall * 60:.0f} seeds/min)")
    if args.json is not None:
        summary = {
            "scenario": sc.name,
            "seeds_run": ex.seeds_run,
            "violation": ex.failure.as_json() if ex.failure else None,
            "deterministic": ex.deterministic,
            "shrunk": [f.as_json() for f in ex.shrunk] if ex.shrunk is not None else None,
            "reproduce": reproduce_command(sc.name, ex.failure.seed, mutant=args.mutant)
            if ex.failure
            else None,
            "probes": ex.probes,
        }
        args.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    if ex.nondeterministic_seed is not None:
        print(
            f"NONDETERMINISTIC: seed {hex(ex.nondeterministic_seed)} gave two trace hashes: "
            "this is a simulator bug"
        )
        return 3
    if ex.failure is not None and not ex.deterministic:
        return 3
    return 1 if ex.failure is not None else 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``uwsx sim`` (exit 0: pass, 1: violation, 2: usage, 3: sim bug)."""
    command = getattr(args, "sim_command", None)
    if command is None:
        print("usage: uwsx sim {list,run,explore,replay} ... (see --help)", file=sys.stderr)
        return 2
    if command == "list":
        return _cmd_list()
    _ensure_hash_seed(args)
    try:
        if command == "run":
            return _cmd_run(args)
        if command == "replay":
            return _cmd_run(args, replay=True)
        if command == "explore":
            return _cmd_explore(args)
    except (LookupError, ValueError) as exc:
        print(f"uwsx sim: {exc}", file=sys.stderr)
        return 2
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uwsx_sim", description=__doc__)
    configure(parser)
    args = parser.parse_args(argv)
    args._argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return run(args)
    except BrokenPipeError:  # `uwsx sim list | head`
        sys.stderr.close()
        return 0
