"""Every async test under tests/sim runs on the simulator's virtual-time loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping

import pytest

from uwsx import _runtime
from uwsx._runtime import Runtime
from uwsx._runtime.ids import SeededIds
from uwsx_sim.clock import Rng, SimClock
from uwsx_sim.loop import SimLoop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], SimLoop]]:
    return {"sim": SimLoop.factory(seed=7)}


@pytest.fixture(autouse=True)
def _virtual_runtime() -> Iterator[None]:
    """Code that reads ``_runtime.current().clock`` (the contract suite's waits, features)
    sees the running SimLoop's virtual time, not the wall clock."""
    clock = SimClock(_loop_time)
    runtime = Runtime(clock=clock, ids=SeededIds(Rng(1, "test-ids")), random=Rng(2, "test"))
    with _runtime.use(runtime):
        yield


@pytest.fixture
def probe() -> Iterator[None]:
    """Register the scripted ``probe`` workload (:mod:`tests.sim.probe`) for one test."""
    from tests.sim.probe import ProbeWorkload
    from uwsx_sim.workloads import WORKLOADS

    WORKLOADS["probe"] = "tests.sim.probe:ProbeWorkload"
    ProbeWorkload.done = []
    yield
    WORKLOADS.pop("probe", None)
    ProbeWorkload.script = None


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return 0.0
