"""A scripted workload for model tests: node 0's first incarnation runs ``ProbeWorkload.script``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from uwsx_sim.node import SimNode
from uwsx_sim.runner import run_seed
from uwsx_sim.scenario import Scenario
from uwsx_sim.workloads.base import Verdict, Workload
from uwsx_sim.world import World

Script = Callable[[World, SimNode], Awaitable[None]]


class ProbeWorkload(Workload):
    feature = "probe"
    script: ClassVar[Script | None] = None
    done: ClassVar[list[str]] = []

    async def run_instance(self, node: SimNode) -> None:
        script = type(self).script
        if node.index == 0 and node.incarnation == 1 and script is not None:
            await script(self.world, node)
            type(self).done.append("ok")

    def check(self) -> list[Verdict]:
        return []


def probe_scenario(
    *,
    instances: int = 2,
    duration: float = 30.0,
    backend: dict[str, Any] | None = None,
    link: dict[str, Any] | None = None,
) -> Scenario:
    return Scenario(
        name="probe",
        description="model test",
        instances=instances,
        duration=duration,
        heal=1.0,
        liveness=1.0,
        backend=backend or {},
        link=link or {},
        clock={},
        workloads=[{"feature": "probe"}],
        nemeses=[],
        checks={},
    )


def run_script(script: Script, **scenario: Any) -> World:
    """Run ``script`` on node 0 of a probe scenario (``scenario``: :func:`probe_scenario`'s
    keywords) with seed 5; it must finish and every check pass. Needs the ``probe`` fixture."""
    ProbeWorkload.script = script
    ProbeWorkload.done = []
    result = run_seed(probe_scenario(**scenario), 5, keep_world=True)
    failed = [v for v in result.verdicts if not v.ok]
    assert ProbeWorkload.done == ["ok"], f"the script did not finish: {failed}"
    assert result.ok, failed
    assert result.world is not None
    return result.world


async def until(world: World, t: float) -> None:
    """Sleep until virtual (backend) time ``t``."""
    await world.clock.sleep(t - world.loop.time())
