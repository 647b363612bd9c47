"""BUGGIFY sites in the features: well-formed, unique, inert in production, reached in the sim.

A site is a call ``buggify("<feature>.<what>")`` with a literal name. In production
:func:`uwsx._runtime.buggify` is always False; the simulator enables each site for a run with
probability 1/4. The reachability test forces every site on for a short run of every feature
workload (with the faults some sites need: a failover for the replay re-read, resets for the
resubscribe paths) and checks that each site in ``uwsx/`` is asked at least once, so a site
never silently becomes dead code.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from uwsx import _runtime

ROOT = Path(__file__).resolve().parents[2]
SITE_NAME = re.compile(r"^(bus|replay|presence|cursor|groups|sharded_bus)\.[a-z][a-z_]*[a-z]$")


def _calls() -> list[tuple[str, int, object]]:
    """``(file, line, name)`` of every ``buggify(...)`` call in ``uwsx/`` (name: the literal,
    or the offending node when it is not one)."""
    out: list[tuple[str, int, object]] = []
    for path in sorted((ROOT / "uwsx").rglob("*.py")):
        if path.parent.name == "_runtime":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name != "buggify":
                continue
            arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
            value = arg.value if isinstance(arg, ast.Constant) else ast.dump(node)
            out.append((str(path.relative_to(ROOT)), node.lineno, value))
    return out


def sites() -> set[str]:
    return {str(name) for _, _, name in _calls()}


def test_sites_are_literal_well_formed_and_unique() -> None:
    calls = _calls()
    assert calls, "no BUGGIFY site found in uwsx/"
    names = [name for _, _, name in calls]
    bad = [(f, line, n) for f, line, n in calls if not (isinstance(n, str) and SITE_NAME.match(n))]
    assert not bad, f"sites must be one literal '<feature>.<what>' name: {bad}"
    dupes = sorted({n for n in names if names.count(n) > 1}, key=str)
    assert not dupes, f"each site name is used at exactly one place: {dupes}"


def test_buggify_is_false_outside_a_simulation() -> None:
    assert _runtime.current() is _runtime.REAL
    assert _runtime.REAL.buggify_sites is None
    for site in sites():
        assert _runtime.buggify(site) is False


def test_disabled_site_draws_no_random_number() -> None:
    class Counting(_runtime.SeededRandom):
        draws = 0

        def random(self) -> float:
            Counting.draws += 1
            return super().random()

    rt = _runtime.Runtime(
        clock=_runtime.RealClock(),
        ids=_runtime.RealIds(),
        random=Counting(1),
        buggify_sites=frozenset({"bus.flush_late"}),
    )
    with _runtime.use(rt):
        assert _runtime.buggify("cursor.trailing_late") is False
        assert Counting.draws == 0
        fired = [_runtime.buggify("bus.flush_late") for _ in range(200)]
    assert Counting.draws == 200
    assert any(fired)
    assert not all(fired)


_SCENARIO = """
[scenario]
name = "buggify-reach"
instances = 3
duration = "8s"
heal = "2s"
liveness = "3s"
link = { request_timeout = "1s", keepalive = "1s" }

[scenario.backend]
replicas = 1
replication_lag = "1ms..50ms"
failover_window = "0s..200ms"
epoch_visible = true

[[workload]]
feature = "bus"
topics = 2
think = "50ms..200ms"

[[workload]]
feature = "replay"
topics = 1
size = 30
think = "30ms..200ms"
poll = "100ms..400ms"

[[workload]]
feature = "presence"
users = 2
tabs_per_instance = 4
heartbeat = "500ms"
ttl = "2s"
hold = "100ms..1s"
think = "20ms..200ms"

[[workload]]
feature = "cursor"
clients_per_instance = 2
moves = 8
throttle = "50ms"
ttl = "3s"
step = "10ms..100ms"

[[workload]]
feature = "groups"
max_members = 3
member_ttl = "3s"
members_per_instance = 2
hold = "300ms..2s"
think = "100ms..1s"

[[workload]]
feature = "sharded_bus"
topics = 4
shards = 2
think = "100ms..300ms"
churn = "200ms..1s"

[[nemesis]]
kind = "failover"
every = "2s..3s"

[[nemesis]]
kind = "reset"
every = "1s..2s"
"""


def test_every_site_is_reached_in_the_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world_mod = pytest.importorskip("uwsx_sim.world")
    from uwsx_sim.runner import run_seed
    from uwsx_sim.scenario import load_scenario

    asked: set[str] = set()

    class AllSites(frozenset[str]):
        """Every site enabled; records which ones were asked."""

        def __contains__(self, site: object) -> bool:
            if isinstance(site, str):
                asked.add(site)
            return True

    monkeypatch.setattr(world_mod, "BuggifySites", lambda seed: AllSites())
    path = tmp_path / "buggify-reach.toml"
    path.write_text(_SCENARIO, encoding="utf-8")
    scenario = load_scenario(path)
    wanted = sites()
    for seed in range(1, 4):
        run_seed(scenario, seed)
        if wanted <= asked:
            break
    assert wanted - asked == set(), f"sites never reached: {sorted(wanted - asked)}"
    assert asked <= wanted, f"sites asked but not found in uwsx/: {sorted(asked - wanted)}"
