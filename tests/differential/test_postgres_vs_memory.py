"""Postgres 15 against the memory model, one test per port group (both drivers).

Postgres has session locks (advisory locks), so the lock vocabulary includes them. The
``asyncpg`` driver runs every group; ``psycopg`` runs one mixed sequence of every port, which
checks the driver layer (type conversions, error mapping) without doubling the budget.
"""

from __future__ import annotations

import pytest

from tests.differential import strategies
from tests.differential.conftest import Differential, fuzz
from tests.integration.pg_servers import PgServer

V = strategies.Vocab()


def test_kv(pg15: PgServer) -> None:
    fuzz(
        pg15.url_for("asyncpg"), "kv", strategies.kv_ops(V), strategies.kv_snapshot(V), examples=100
    )


def test_sorted_log(pg15: PgServer) -> None:
    snapshot = strategies.log_snapshot(V, "log")
    fuzz(pg15.url_for("asyncpg"), "log", strategies.log_ops(V, "log"), snapshot, examples=100)


def test_stream(pg15: PgServer) -> None:
    snapshot = strategies.log_snapshot(V, "stream")
    fuzz(pg15.url_for("asyncpg"), "stream", strategies.log_ops(V, "stream"), snapshot, examples=100)


def test_locks(pg15: PgServer) -> None:
    strategy = strategies.lock_ops(V, session_locks=True)
    fuzz(pg15.url_for("asyncpg"), "locks", strategy, strategies.lock_snapshot(V), examples=100)


def test_queue_jobs(pg15: PgServer) -> None:
    fuzz(
        pg15.url_for("asyncpg"),
        "jobs",
        strategies.queue_ops("jobs"),
        strategies.queue_snapshot(),
        examples=300,
    )


def test_queue_tasks(pg15: PgServer) -> None:
    fuzz(
        pg15.url_for("asyncpg"),
        "tasks",
        strategies.queue_ops("tasks"),
        strategies.queue_snapshot(),
        examples=60,
    )


def test_psycopg_mixed(pg15: PgServer) -> None:
    strategy = strategies.mixed_ops(V, session_locks=True)
    fuzz(pg15.url_for("psycopg"), "mixed", strategy, strategies.mixed_snapshot(V), examples=20)


@pytest.mark.parametrize("name", sorted(strategies.REGRESSIONS))
def test_regression(pg15: PgServer, name: str) -> None:
    with Differential(pg15.url_for("asyncpg"), "regression") as diff:
        diff.check(strategies.REGRESSIONS[name])
