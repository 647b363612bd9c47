"""Cancelled and lost statements on a real server.

A connection whose statement was cancelled, timed out or lost is discarded at once instead of
being handed back to its pool, so neither the cancelled call nor ``backend.close()`` waits for
the server to answer a cancel request, and a failure while cleaning up never replaces the
uwsx error of the statement.

Every wait is bounded by ``WAIT`` while ``connect_timeout`` (the bound the drivers put on
releasing and closing connections) is far longer, so a close that waits fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import pytest

import uwsx
from tests.integration.pg_servers import PgServer
from tests.integration.postgres.relay import relay_to
from uwsx import _runtime
from uwsx.errors import Indeterminate
from uwsx_postgres import PostgresBackend

T = TypeVar("T")

WAIT = 20.0
PATIENT: dict[str, Any] = {
    "connect_timeout": 600.0,
    "command_timeout": None,
    "ping_interval": 600.0,
}
#: One pooled connection: the statement under test is on it, and a discarded one must be
#: replaced for the next operation to run at all.
ONE: dict[str, Any] = {"pool_min_size": 1, "pool_max_size": 1, **PATIENT}


def bounded(aw: Awaitable[T]) -> Awaitable[T]:
    return asyncio.wait_for(aw, WAIT)


async def until(probe: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await probe():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {WAIT:g} s waiting for {what}")
        await asyncio.sleep(0.02)


async def connect(url: str, prefix: str | None = None, **options: Any) -> PostgresBackend:
    prefix = prefix or f"cancel-{_runtime.current().ids.hex(4)}:"
    backend = await uwsx.connect(url, key_prefix=prefix, **options)
    assert isinstance(backend, PostgresBackend)
    return backend


@contextlib.asynccontextmanager
async def row_locked(
    server: PgServer, key: str
) -> AsyncIterator[Callable[[], Awaitable[list[int]]]]:
    """Hold the row lock of ``uwsx_kv`` row ``key``; yields a probe listing the sessions
    waiting for it."""
    async with await psycopg.AsyncConnection.connect(server.url, autocommit=True) as blocker:
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT 1 FROM uwsx_kv WHERE key = %s FOR UPDATE", (key,))
        pid = blocker.info.backend_pid

        async def waiting() -> list[int]:
            async with await psycopg.AsyncConnection.connect(server.url) as conn:
                cur = await conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    (pid,),
                )
                return [int(row[0]) for row in await cur.fetchall()]

        yield waiting
        await blocker.execute("ROLLBACK")


async def one_waiting(waiting: Callable[[], Awaitable[list[int]]]) -> bool:
    return len(await waiting()) == 1


async def _cancel_all(tasks: list[asyncio.Future[Any]]) -> list[BaseException | None]:
    for task in tasks:
        task.cancel()
    results = await bounded(asyncio.gather(*tasks, return_exceptions=True))
    return [r if isinstance(r, BaseException) else None for r in results]


async def test_cancelled_write_on_a_stuck_connection_does_not_hold_up_close(
    pg_server: PgServer, pg_driver: str
) -> None:
    """The server stops answering on the connection of an in-flight write (its reply, and the
    answer to the cancel request, never arrive): cancelling the write and closing the backend
    still finish, and the cancel request reached the server (the write does not apply once
    the row lock is free)."""
    async with relay_to(pg_server.url_for(pg_driver)) as (relay, url):
        backend = await connect(url, **ONE)
        try:
            await backend.kv.map_put("m", "f", "v")
            async with row_locked(pg_server, backend.key_prefix + "m") as waiting:
                puts: list[asyncio.Future[Any]] = [
                    asyncio.ensure_future(backend.kv.map_put_many("m", {"a": "1", "b": "2"}))
                    for _ in range(2)
                ]
                await until(lambda: one_waiting(waiting), "the first write to wait on the lock")
                [pipe] = relay.open_pipes()
                pipe.freeze()
                results = await _cancel_all(puts)
                assert all(isinstance(r, asyncio.CancelledError) for r in results), results
                await bounded(backend.close())
        finally:
            await bounded(backend.close())
    checker = await connect(pg_server.url_for(pg_driver), backend.key_prefix)
    try:
        assert await checker.kv.map_items("m") == {"f": "v"}
    finally:
        await checker.close()


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 5, 8, 13, 21, 34])
async def test_close_after_cancelling_writes_is_prompt(pg_url: str, steps: int) -> None:
    """Two writes cancelled a few loop iterations in (before, while or after they reach the
    server), then close(): the pool recovers its only connection for the next operation, and
    close() does not wait for cancel requests to be answered."""
    backend = await connect(pg_url, **ONE)
    try:
        await backend.kv.map_put("m", "f", "v")
        items = {f"f{i}": "x" * 100 for i in range(500)}
        puts: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(backend.kv.map_put_many("m", items)) for _ in range(2)
        ]
        for _ in range(steps):
            await asyncio.sleep(0)
        for result in await _cancel_all(puts):
            assert result is None or isinstance(result, asyncio.CancelledError), result
        assert await bounded(backend.kv.map_get("m", "f")) == "v"
        await bounded(backend.close())
    finally:
        await bounded(backend.close())


async def test_cancelled_listen_on_a_stuck_session_does_not_hold_up_close(
    pg_server: PgServer, pg_driver: str
) -> None:
    """The LISTEN session stops answering while a channel is being added: cancelling the add
    and closing the backend still finish, and the channel is not left subscribed."""
    async with relay_to(pg_server.url_for(pg_driver)) as (relay, url):
        backend = await connect(url, **ONE)
        try:
            before = set(relay.pipes)
            sub = await backend.pubsub.subscribe(["first"], lambda _c, _m: None)
            [session] = [p for p in relay.pipes if p not in before]
            session.freeze()
            adding = asyncio.ensure_future(sub.add(["second"]))
            await bounded(session.holding.wait())
            [result] = await _cancel_all([adding])
            assert isinstance(result, asyncio.CancelledError), result
            assert sub.channels == {"first"}
            await bounded(backend.close())
        finally:
            await bounded(backend.close())


async def test_write_timing_out_on_a_stuck_connection_ends_indeterminate(
    pg_server: PgServer, pg_driver: str
) -> None:
    """A write whose connection stops answering runs into ``command_timeout``: it ends
    Indeterminate (never a driver error from cleaning up the connection, whose cancel request
    goes unanswered) and the next operation runs on a new connection."""
    async with relay_to(pg_server.url_for(pg_driver)) as (relay, url):
        backend = await connect(url, pool_min_size=1, pool_max_size=1, command_timeout=0.5)
        try:
            await backend.kv.set("k", "v")
            async with row_locked(pg_server, backend.key_prefix + "k") as waiting:
                write = asyncio.ensure_future(backend.kv.set("k", "w"))
                await until(lambda: one_waiting(waiting), "the write to wait on the lock")
                [pipe] = relay.open_pipes()
                pipe.freeze()
                with pytest.raises(Indeterminate):
                    await bounded(write)
            assert await bounded(backend.kv.get("k")) == "v"
        finally:
            await bounded(backend.close())
