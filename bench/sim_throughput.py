"""Simulator speed: loop handles/s, simulated backend ops/s, instance-seconds per wall second.

Runs the ``kv`` workload (history recording on, trace hashing on) at ~100 backend ops/s per
instance for 5, 50 and 200 instances, then measures how many seeds per minute the shipped 40-60 s
scenarios explore. Best of ``--repeat`` runs (this machine is shared). Prints a Markdown table;
``--write`` also stores it in ``bench/results/sim.md``.

    python bench/sim_throughput.py [--repeat 3] [--write]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from uwsx_sim.runner import RunResult, run_seed
from uwsx_sim.scenario import Scenario, find_scenario

SIZES = ((5, 60.0), (50, 10.0), (200, 3.0))
EXPLORE = ("presence-crash", "lock-pause", "bus-partition", "replay-crash")


def kv_load(instances: int, duration: float) -> Scenario:
    return Scenario(
        name=f"kv-load-{instances}",
        description="throughput",
        instances=instances,
        duration=duration,
        heal=0.0,
        liveness=0.0,
        backend={},
        link={},
        clock={},
        workloads=[{"feature": "kv", "workers_per_instance": 4, "rate": 100}],
        nemeses=[],
        checks={},
    )


def best_run(sc: Scenario, repeat: int) -> tuple[float, RunResult]:
    run_seed(sc.with_overrides(duration=min(sc.duration, 1.0)), 99)  # warm imports
    best: tuple[float, RunResult] | None = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = run_seed(sc, 1)
        wall = time.perf_counter() - t0
        if best is None or wall < best[0]:
            best = (wall, r)
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    lines = [
        f"Python {platform.python_version()}, one core, best of {args.repeat}; "
        "kv workload: 4 workers/instance, ~100 backend ops/s/instance, history + trace on.",
        "",
        "| instances | simulated s | wall s | x real time | instance-s / wall s | "
        "backend ops / wall s | loop handles / wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for instances, duration in SIZES:
        wall, r = best_run(kv_load(instances, duration), args.repeat)
        vt = r.virtual_time
        lines.append(
            f"| {instances} | {vt:.0f} | {wall:.2f} | {vt / wall:.0f} | "
            f"{instances * vt / wall:,.0f} | {r.backend_ops / wall:,.0f} | "
            f"{r.handles / wall:,.0f} |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        "| scenario | simulated s / seed | seeds | wall s | seeds / min |",
        "|---|---|---|---|---|",
    ]
    for name in EXPLORE:
        sc = find_scenario(name)
        run_seed(sc.with_overrides(duration=1.0), 99)
        t0 = time.perf_counter()
        for seed in range(1, args.seeds + 1):
            r = run_seed(sc, seed)
        wall = time.perf_counter() - t0
        lines.append(
            f"| {name} | {r.virtual_time:.0f} | {args.seeds} | {wall:.1f} | "
            f"{args.seeds / wall * 60:.0f} |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        out = Path(__file__).parent / "results" / "sim.md"
        out.write_text("# Simulator speed\n\n" + text, encoding="utf-8")


if __name__ == "__main__":
    main()
