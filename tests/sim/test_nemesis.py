"""Fault schedules: drawn from the seed alone, independent per nemesis, swarm varies the mix."""

from __future__ import annotations

from typing import Any

from uwsx_sim.clock import Rng
from uwsx_sim.nemesis import Fault, draw_schedule
from uwsx_sim.scenario import parse_duration, parse_range

NEMESES: list[dict[str, Any]] = [
    {"kind": "crash", "every": "2s..5s", "duration": "1s"},
    {"kind": "pause", "every": "1s..3s", "duration": "500ms..2s"},
    {"kind": "clock-step", "every": "5s", "value": "-1s..1s"},
]


def draw(seed: int, nemeses: list[dict[str, Any]], *, swarm: bool = False) -> list[Fault]:
    return draw_schedule(nemeses, Rng.stream(seed, "faults"), instances=4, chaos=60.0, swarm=swarm)


def test_schedule_is_a_function_of_the_seed() -> None:
    assert draw(1, NEMESES) == draw(1, NEMESES)
    assert draw(1, NEMESES) != draw(2, NEMESES)


def test_removing_a_nemesis_leaves_the_others_unchanged() -> None:
    full = draw(3, NEMESES)
    without_pause = draw(3, [NEMESES[0], {"kind": "loss", "every": "1h"}, NEMESES[2]])
    assert [f for f in full if f.kind != "pause"] == without_pause


def test_faults_respect_their_knobs() -> None:
    faults = draw(5, NEMESES)
    assert all(0 <= f.at < 60 for f in faults)
    assert all(0 <= (f.target or 0) < 4 for f in faults)
    steps = [f for f in faults if f.kind == "clock-step"]
    assert steps
    assert all(-1.0 <= f.value <= 1.0 for f in steps)
    assert all(0.5 <= f.duration <= 2.0 for f in faults if f.kind == "pause")


def test_swarm_picks_different_mixes() -> None:
    mixes = {frozenset(f.kind for f in draw(s, NEMESES, swarm=True)) for s in range(1, 30)}
    assert len(mixes) > 1


def test_durations_and_ranges() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2m") == 120.0
    assert parse_duration(3) == 3.0
    assert parse_range("-1s..1s") == (-1.0, 1.0)
    assert parse_range("0.9..1.1", duration=False) == (0.9, 1.1)


def test_backend_restart_has_downtime_only_when_asked() -> None:
    restart = {"kind": "backend-restart", "every": "5s..9s"}
    instant = draw(4, [restart])
    down = draw(4, [{**restart, "duration": "1s..3s"}])
    assert instant
    assert all(f.duration == 0.0 and f.target is None for f in instant)
    # the same restarts at the same times (no extra draw), each with its downtime
    assert [f.at for f in down] == [f.at for f in instant]
    assert all(1.0 <= f.duration <= 3.0 for f in down)
    assert "for " in down[0].describe()
