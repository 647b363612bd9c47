"""Every shipped scenario passes a few seeds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from uwsx_sim.runner import explore, run_seed
from uwsx_sim.scenario import Scenario, find_scenario, list_scenarios

SCENARIOS = list_scenarios()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scenario_passes(scenario: Scenario, seed: int) -> None:
    result = run_seed(scenario, seed)
    assert result.ok, [v for v in result.verdicts if not v.ok]
    assert result.backend_ops > 0


def test_under_exploring_batch_is_reported() -> None:
    calm = replace(find_scenario("lock-pause"), nemeses=[], duration=5.0)
    ex = explore(calm, range(1, 3))
    assert ex.failure is None
    assert "locks: stale write rejected" in ex.silent_probes
