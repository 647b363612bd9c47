"""Planted bugs prove the checkers bite: each is found within 500 seeds and reproduces."""

from __future__ import annotations

import pytest

from uwsx_sim.mutants import MUTANTS, _load_feature_mutants
from uwsx_sim.runner import explore, run_seed
from uwsx_sim.scenario import find_scenario

_load_feature_mutants()
NAMES = sorted(MUTANTS)


@pytest.mark.parametrize("name", NAMES)
def test_mutant_is_found_and_reproduces(name: str) -> None:
    mutant = MUTANTS[name]
    sc = find_scenario(mutant.scenario)
    ex = explore(sc, range(1, 501), mutant=name, do_shrink=False)
    assert ex.failure is not None, f"{name} survived 500 seeds"
    assert ex.deterministic
    assert mutant.invariant in {v.invariant for v in ex.failure.failed}
    again = run_seed(sc, ex.failure.seed, mutant=name)
    assert again.trace_hash == ex.failure.trace_hash
    assert mutant.invariant in {v.invariant for v in again.failed}


def test_every_mutant_scenario_passes_without_the_mutant() -> None:
    for scenario in sorted({m.scenario for m in MUTANTS.values()}):
        result = run_seed(find_scenario(scenario), 1)
        assert result.ok, (scenario, [v for v in result.verdicts if not v.ok])


def test_shrinking_keeps_the_failure() -> None:
    sc = find_scenario("lock-pause")
    ex = explore(sc, range(1, 50), mutant="lock-release-no-owner-check")
    assert ex.failure is not None
    assert ex.shrunk is not None
    assert len(ex.shrunk) <= len(ex.failure.faults)
    replayed = run_seed(sc, ex.failure.seed, faults=ex.shrunk, mutant="lock-release-no-owner-check")
    assert "LK-3" in {v.invariant for v in replayed.failed}
