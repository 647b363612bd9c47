"""``uwsx sim`` through the uwsx command's plugin hook, and ``python -m uwsx_sim``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uwsx import cli as uwsx_cli
from uwsx_sim import cli


@pytest.fixture(autouse=True)
def _fixed_hash_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UWSX_SIM_NO_REEXEC", "1")


def test_list_names_scenarios_invariants_and_mutants(capsys: pytest.CaptureFixture[str]) -> None:
    assert uwsx_cli.main(["sim", "list"]) == 0
    out = capsys.readouterr().out
    for word in (
        "lock-pause",
        "bus-partition",
        "replay-crash",
        "LK-2",
        "BUS-3",
        "RP-1",
        "lock-release-no-owner-check",
    ):
        assert word in out


def test_run_prints_report_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.json"
    history = tmp_path / "h.jsonl"
    status = uwsx_cli.main(
        [
            "sim",
            "run",
            "lock-pause",
            "--seed",
            "3",
            "--duration",
            "10s",
            "--instances",
            "3",
            "--json",
            str(report),
            "--history",
            str(history),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "RESULT: PASS" in out
    assert "trace hash:" in out
    assert "fault timeline:" in out
    data = json.loads(report.read_text())
    assert data["ok"]
    assert data["seed"] == 3
    first = json.loads(history.read_text().splitlines()[0])
    assert first["type"] == "invoke"


def test_explore_finds_mutant_and_replay_reproduces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "failure"
    status = cli.main(
        [
            "explore",
            "lock-pause",
            "--seeds",
            "20",
            "--mutant",
            "resource-no-fence-check",
            "--out",
            str(out_dir),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL lock-pause" in out
    assert "invariant=LK-2" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("reproduce: "))
    argv = line.removeprefix("reproduce: ").split()
    assert argv[:3] == ["uwsx", "sim", "replay"]
    assert (out_dir / "history.jsonl").exists()
    assert (out_dir / "faults.json").exists()
    assert uwsx_cli.main(argv[1:]) == 1
    assert "invariant=LK-2" in capsys.readouterr().out
    minimal = out_dir / "minimal" / "faults.json"
    assert (
        cli.main(
            [
                "replay",
                "lock-pause",
                "--seed",
                argv[5],
                "--mutant",
                "resource-no-fence-check",
                "--faults",
                str(minimal),
            ]
        )
        == 1
    )


def test_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "no-such-scenario"]) == 2
    assert "unknown scenario" in capsys.readouterr().err
