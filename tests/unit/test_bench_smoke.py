"""Every benchmark script still runs: each is started with tiny durations (no ``--write``) and
must exit 0 and print its table. Nothing is timed here; the numbers are in ``bench/results``.

The scripts start their own throwaway redis-server / PostgreSQL through the test harness, so
this needs the same binaries as the integration tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SHORT = ["--seconds", "0.05", "--repeat", "1"]

RUNS: dict[str, list[str]] = {
    "bench_replay.py": SHORT,
    "bench_bus.py": SHORT,
    "bench_postgres.py": SHORT,
    "redis_throughput.py": [*SHORT, "--tasks", "1", "4"],
    "bench_presence.py": ["--users", "20", "--topics", "100", "--per-user", "3"],
    "sim_throughput.py": ["--repeat", "1", "--seeds", "1"],
}


def test_every_script_is_covered() -> None:
    scripts = {p.name for p in BENCH.glob("*.py")} - {"bench_common.py"}
    assert scripts == set(RUNS)


@pytest.mark.parametrize("script", sorted(RUNS))
def test_benchmark_runs(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *RUNS[script]],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=BENCH.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "|" in result.stdout, "a benchmark prints a table"
