"""Lock fences on Postgres are hybrid-logical-clock values.

A grant issues ``GREATEST(nextval, clock in microseconds)`` (at least the key's row fence + 1
when the row exists) and moves the sequence ``uwsx_lock_fence`` up to it. These tests take the
sequence and the rows away the way a failover to a lagging standby does and check that the next
fence is still above every earlier one, for leases and session locks; they check each term of
the rule, and the fallback for a role that may not ``setval`` the sequence.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import uwsx
from tests.integration.pg_servers import PgServer
from uwsx import _runtime
from uwsx.ports.locks import Lease, SessionLock
from uwsx_postgres import PostgresBackend

SEQ = "uwsx_lock_fence"
CLOCK_US = "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
HOUR_US = 3_600_000_000


def sql(server: PgServer, statement: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(server.url, autocommit=True) as conn:
        cur = conn.execute(statement, args)
        return cur.fetchall() if cur.description else []


def scalar(server: PgServer, statement: str, *args: object) -> int:
    return int(sql(server, statement, *args)[0][0])


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[PostgresBackend]:
    backend = await uwsx.connect(url, key_prefix=f"pgf-{_runtime.current().ids.hex(4)}:")
    assert isinstance(backend, PostgresBackend)
    try:
        yield backend
    finally:
        await backend.close()


def granted(lease: Lease | SessionLock | None, fences: list[int]) -> None:
    assert lease is not None
    fences.append(lease.fence)


async def test_lock_fences_stay_above_earlier_ones_when_sequence_and_rows_are_lost(
    pg_server: PgServer, pg_url: str
) -> None:
    async with client(pg_url) as backend:
        locks, row_key = backend.locks, backend.key_prefix + "res"
        fences: list[int] = []
        granted(await locks.acquire("res", "a", ttl=30.0), fences)
        older = scalar(pg_server, f"SELECT last_value FROM {SEQ}")  # what a lagging standby has
        assert await locks.release("res", "a")
        granted(await locks.seize("res", "b", ttl=30.0), fences)
        granted(await locks.seize("res", "c", ttl=30.0), fences)
        assert await locks.release("res", "c")
        granted(await locks.acquire("res", "d", ttl=30.0), fences)

        # The failover lost the latest grants: the sequence is back where it was, the row
        # holds an older lease (or none).
        sql(pg_server, "SELECT setval(%s, %s)", SEQ, older)
        sql(pg_server, "UPDATE uwsx_locks SET fence = %s WHERE key = %s", fences[0], row_key)
        granted(await locks.seize("res", "e", ttl=30.0), fences)
        sql(pg_server, "SELECT setval(%s, %s)", SEQ, older)
        sql(pg_server, "DELETE FROM uwsx_locks WHERE key = %s", row_key)
        granted(await locks.acquire("res", "f", ttl=30.0), fences)
        assert fences == sorted(set(fences)), f"fences must strictly increase: {fences}"

        sessions: list[int] = []
        first = await locks.try_session_lock("leader")
        granted(first, sessions)
        assert first is not None
        assert await locks.release_session_lock(first)
        sql(pg_server, "SELECT setval(%s, %s)", SEQ, older)
        granted(await locks.try_session_lock("leader"), sessions)
        assert sessions == sorted(set(sessions)), f"session fences must increase: {sessions}"


async def test_lock_fences_follow_the_clock_and_the_sequence_follows_them(
    pg_server: PgServer, pg_url: str
) -> None:
    async with client(pg_url) as backend:
        before = scalar(pg_server, CLOCK_US)
        lease = await backend.locks.acquire("clocked", "a", ttl=30.0)
        assert lease is not None
        assert lease.fence >= before
        # The sequence holds the fence, so a clock that steps back does not repeat it.
        assert scalar(pg_server, f"SELECT last_value FROM {SEQ}") >= lease.fence
        lock = await backend.locks.try_session_lock("clocked")
        assert lock is not None
        assert lock.fence > lease.fence
        assert scalar(pg_server, f"SELECT last_value FROM {SEQ}") >= lock.fence


async def test_lock_row_fence_ahead_of_the_clock_keeps_counting(
    pg_server: PgServer, pg_url: str
) -> None:
    """A lease row whose fence was issued by a server whose clock ran an hour ahead: the row
    term orders the next grants of that key while this server's clock is behind it."""
    restore = scalar(pg_server, f"SELECT last_value FROM {SEQ}")
    try:
        async with client(pg_url) as backend:
            first = await backend.locks.acquire("ahead", "a", ttl=30.0)
            assert first is not None
            ahead = scalar(pg_server, CLOCK_US) + HOUR_US
            key = backend.key_prefix + "ahead"
            sql(pg_server, "UPDATE uwsx_locks SET fence = %s WHERE key = %s", ahead, key)
            assert (await backend.locks.seize("ahead", "b", ttl=30.0)).fence == ahead + 1
            assert (await backend.locks.seize("ahead", "c", ttl=30.0)).fence == ahead + 2
    finally:
        # Put the shared sequence back behind the clock, as the other tests expect it.
        sql(pg_server, "SELECT setval(%s, %s)", SEQ, restore)


async def test_lock_fences_without_update_on_the_sequence(
    pg_server: PgServer, pg_driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    if not pg_server.owned:
        pytest.skip("creating a role needs a server this test run owns")
    role = f"uwsx_usage_{_runtime.current().ids.hex(4)}"
    async with client(pg_server.url_for(pg_driver)) as owner:
        assert await owner.locks.acquire("setup", "x", ttl=1.0) is not None  # tables exist
    sql(pg_server, f"CREATE ROLE {role} LOGIN")
    try:
        sql(pg_server, f"GRANT SELECT, INSERT, UPDATE, DELETE ON uwsx_locks TO {role}")
        sql(pg_server, f"GRANT USAGE ON SEQUENCE {SEQ} TO {role}")
        parts = urlsplit(pg_server.url_for(pg_driver))
        url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
        with caplog.at_level(logging.WARNING, logger="uwsx.postgres"):
            async with client(url) as backend:
                locks, fences = backend.locks, list[int]()
                granted(await locks.acquire("res", "a", ttl=30.0), fences)
                assert await locks.release("res", "a")
                granted(await locks.acquire("res", "b", ttl=30.0), fences)
                granted(await locks.seize("res", "c", ttl=30.0), fences)
                lock = await locks.try_session_lock("res")
                granted(lock, fences)
                assert lock is not None
                assert await locks.release_session_lock(lock)
        assert fences == sorted(set(fences)), f"fences must strictly increase: {fences}"
        assert fences[0] >= scalar(pg_server, CLOCK_US) - HOUR_US, "clock-derived fences"
        assert "lacks UPDATE on the sequence" in caplog.text
    finally:
        sql(pg_server, f"DROP OWNED BY {role}")
        sql(pg_server, f"DROP ROLE {role}")
