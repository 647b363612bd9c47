"""Workloads by feature name (the ``feature`` key of a ``[[workload]]`` table)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from uwsx_sim.clock import Rng

if TYPE_CHECKING:
    from uwsx_sim.workloads.base import Workload
    from uwsx_sim.world import World

__all__ = ["WORKLOADS", "build_workload", "workload_class"]

#: feature name -> "module:Class" (imported lazily: a workload may need a feature module that
#: is not installed yet)
WORKLOADS: dict[str, str] = {
    "locks": "uwsx_sim.workloads.locks:LockWorkload",
    "kv": "uwsx_sim.workloads.kv:KVWorkload",
    "bus": "uwsx_sim.workloads.bus:BusWorkload",
    "replay": "uwsx_sim.workloads.replay:ReplayWorkload",
    "presence": "uwsx_sim.workloads.presence:PresenceWorkload",
    "groups": "uwsx_sim.workloads.groups:GroupsWorkload",
    "sharded_bus": "uwsx_sim.workloads.sharded_bus:ShardedBusWorkload",
    "cursor": "uwsx_sim.workloads.cursor:CursorWorkload",
}


def workload_class(feature: str) -> type[Workload]:
    try:
        target = WORKLOADS[feature]
    except KeyError:
        raise ValueError(
            f"unknown workload feature {feature!r}; known: {', '.join(sorted(WORKLOADS))}"
        ) from None
    module, _, attr = target.partition(":")
    cls: type[Workload] = getattr(importlib.import_module(module), attr)
    return cls


def build_workload(world: World, spec: dict[str, Any], rng: Rng) -> Workload:
    feature = str(spec.get("feature", ""))
    return workload_class(feature)(world, spec, rng)
