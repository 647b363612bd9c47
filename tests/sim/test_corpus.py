"""Every seed that ever failed (sim/corpus/<scenario>.txt) passes now."""

from __future__ import annotations

from pathlib import Path

from uwsx_sim.clock import parse_seed
from uwsx_sim.runner import run_seed
from uwsx_sim.scenario import find_scenario

CORPUS = Path(__file__).resolve().parents[2] / "sim" / "corpus"


def test_corpus_seeds_pass() -> None:
    failures = []
    for path in sorted(CORPUS.glob("*.txt")):
        scenario = find_scenario(path.stem)
        for line in path.read_text(encoding="utf-8").split():
            result = run_seed(scenario, parse_seed(line))
            if not result.ok:
                failures.append((path.stem, line, [v.invariant for v in result.failed]))
    assert failures == []
