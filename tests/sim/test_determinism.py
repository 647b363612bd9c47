"""Same seed, same trace hash: in process, across processes and across PYTHONHASHSEEDs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from uwsx_sim.runner import run_seed
from uwsx_sim.scenario import find_scenario


def test_same_seed_same_hash_in_process() -> None:
    sc = find_scenario("bus-partition").with_overrides(duration=15.0)
    a = run_seed(sc, 11)
    b = run_seed(sc, 11)
    assert a.trace_hash == b.trace_hash
    assert a.backend_ops == b.backend_ops > 0


def test_other_seed_other_hash() -> None:
    sc = find_scenario("lock-pause").with_overrides(duration=10.0)
    assert run_seed(sc, 1).trace_hash != run_seed(sc, 2).trace_hash


def _hash_in_subprocess(tmp_path: Path, hash_seed: str, *, reexec: bool) -> str:
    out = tmp_path / f"report-{hash_seed}-{reexec}.json"
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    if not reexec:
        env["UWSX_SIM_NO_REEXEC"] = "1"
    else:
        env.pop("UWSX_SIM_NO_REEXEC", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "uwsx_sim",
            "run",
            "replay-crash",
            "--seed",
            "0x2a",
            "--duration",
            "10s",
            "--json",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["seed"] == 42
    return str(data["trace_hash"])


@pytest.mark.parametrize("reexec", [True, False], ids=["runner-fixes-hash-seed", "raw"])
def test_same_hash_across_processes_and_hash_seeds(tmp_path: Path, reexec: bool) -> None:
    hashes = {_hash_in_subprocess(tmp_path, seed, reexec=reexec) for seed in ("1", "2")}
    assert len(hashes) == 1
