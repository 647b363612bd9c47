"""Scenario files: TOML tables naming the instances, workloads, nemeses and checks of a run.

Durations are strings with a unit (``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"``) or numbers of
seconds. A knob given as a range ``"a..b"`` is chosen per seed (swarm testing): some seeds get
the low end, some the high, which reaches corners a fixed mix never does.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from uwsx_sim.clock import Rng

__all__ = [
    "Scenario",
    "find_scenario",
    "list_scenarios",
    "load_scenario",
    "parse_duration",
    "pick",
    "scenario_dirs",
]

_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(-?[0-9]*\.?[0-9]+)\s*(ns|us|ms|s|m|h)?\s*$")


def parse_duration(value: object) -> float:
    """``"250ms"`` -> 0.25; numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")  # noqa: TRY004 - a config error
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {value!r}")  # noqa: TRY004 - a config error
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 250ms, 5s, 2m)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_range(value: object, *, duration: bool = True) -> tuple[float, float]:
    """``"1s..5s"`` -> (1.0, 5.0); a single value v -> (v, v)."""
    conv = parse_duration if duration else _number
    if isinstance(value, str) and ".." in value:
        low, high = value.split("..", 1)
        lo, hi = conv(low), conv(high)
        if hi < lo:
            raise ValueError(f"empty range {value!r}")
        return lo, hi
    v = conv(value)
    return v, v


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")  # noqa: TRY004 - a config error
    return float(value)


def pick(rng: Rng, value: object, *, duration: bool = True) -> float:
    """A value from a knob: fixed, or uniform in its range (drawn from ``rng``)."""
    lo, hi = parse_range(value, duration=duration)
    return lo if lo == hi else rng.uniform(lo, hi)


@dataclass(slots=True)
class Scenario:
    """A parsed scenario file."""

    name: str
    description: str
    instances: int
    duration: float
    heal: float
    liveness: float
    backend: dict[str, Any]
    link: dict[str, Any]
    clock: dict[str, Any]
    workloads: list[dict[str, Any]]
    nemeses: list[dict[str, Any]]
    checks: dict[str, list[str]]
    swarm: bool = False
    path: Path | None = None
    mutant: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def with_overrides(
        self, *, instances: int | None = None, duration: float | None = None
    ) -> Scenario:
        out = replace(self)
        if instances is not None:
            if instances < 1:
                raise ValueError("--instances must be at least 1")
            out.instances = instances
        if duration is not None:
            out.duration = duration
        return out


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"[{key}] must be a table")  # noqa: TRY004 - a config error
    return value


def load_scenario(path: Path) -> Scenario:
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    head = _table(data, "scenario")
    workloads = data.get("workload", [])
    nemeses = data.get("nemesis", [])
    if not isinstance(workloads, list) or not workloads:
        raise ValueError(f"{path.name}: at least one [[workload]] is required")
    if not isinstance(nemeses, list):
        raise ValueError(f"{path.name}: [[nemesis]] must be an array of tables")  # noqa: TRY004
    checks = _table(data, "checks")
    return Scenario(
        name=str(head.get("name", path.stem)),
        description=str(head.get("description", "")),
        instances=int(head.get("instances", 3)),
        duration=parse_duration(head.get("duration", "60s")),
        heal=parse_duration(head.get("heal", "5s")),
        liveness=parse_duration(head.get("liveness", "15s")),
        backend=_table(head, "backend"),
        link=_table(head, "link"),
        clock=_table(head, "clock"),
        workloads=[dict(w) for w in workloads],
        nemeses=[dict(n) for n in nemeses],
        checks={str(k): [str(i) for i in v] for k, v in checks.items()},
        swarm=bool(head.get("swarm", False)),
        path=path,
        mutant=head.get("mutant"),
        raw=data,
    )


def scenario_dirs() -> list[Path]:
    """Where scenario files live: the source tree's ``sim/scenarios`` (editable installs) and
    the copy shipped inside the wheel."""
    here = Path(__file__).resolve().parent
    dirs = [here.parent / "scenarios"]
    shipped = resources.files("uwsx_sim") / "_scenarios"
    if isinstance(shipped, Path):
        dirs.append(shipped)
    return [d for d in dirs if d.is_dir()]


def list_scenarios() -> list[Scenario]:
    seen: dict[str, Scenario] = {}
    for d in scenario_dirs():
        for path in sorted(d.glob("*.toml")):
            sc = load_scenario(path)
            seen.setdefault(sc.name, sc)
    return [seen[k] for k in sorted(seen)]


def find_scenario(name_or_path: str) -> Scenario:
    """A scenario by name, or a path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return load_scenario(path)
    for sc in list_scenarios():
        if sc.name == name_or_path:
            return sc
    known = ", ".join(s.name for s in list_scenarios()) or "none"
    raise LookupError(f"unknown scenario {name_or_path!r} (known: {known})")
