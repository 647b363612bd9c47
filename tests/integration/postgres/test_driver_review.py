"""Driver shims under faults found in review: stuck servers around a transaction's BEGIN and
ROLLBACK, and a dedicated session held from the caller's asyncpg pool.

Every wait is bounded by ``WAIT``; ``connect_timeout`` is far longer where it must not be the
bound that ends a wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import psycopg
import pytest

import uwsx
from tests.helpers import eventually
from tests.integration.pg_servers import PgServer
from tests.integration.postgres.relay import relay_to
from uwsx import _runtime
from uwsx.errors import BackendError, Unavailable
from uwsx.ports.pubsub import LossWindow
from uwsx_postgres import PostgresBackend

T = TypeVar("T")

WAIT = 20.0


def bounded(aw: Awaitable[T]) -> Awaitable[T]:
    return asyncio.wait_for(aw, WAIT)


async def until(probe: Callable[[], bool], what: str) -> None:
    await eventually(probe, timeout=WAIT, what=what)


async def connect(target: Any, **options: Any) -> PostgresBackend:
    prefix = f"review-{_runtime.current().ids.hex(4)}:"
    backend = await uwsx.connect(target, key_prefix=prefix, **options)
    assert isinstance(backend, PostgresBackend)
    return backend


#: One pooled connection with a short statement bound and a long acquire/close bound.
STUCK: dict[str, Any] = {
    "pool_min_size": 1,
    "pool_max_size": 1,
    "command_timeout": 0.5,
    "connect_timeout": 600.0,
    "ping_interval": 600.0,
}


async def test_begin_on_a_stuck_connection_is_bounded(pg_server: PgServer, pg_driver: str) -> None:
    """The server stops answering before a transaction's BEGIN is answered: the transaction
    ends Unavailable after ``command_timeout`` (nothing can have committed), and the next
    operation runs on a new connection."""
    async with relay_to(pg_server.url_for(pg_driver)) as (relay, url):
        backend = await connect(url, **STUCK)
        try:
            await backend.kv.set("k", "v")
            [pipe] = relay.open_pipes()
            pipe.freeze()

            async def run() -> None:
                async with backend.database.transaction() as tx:
                    await tx.fetch("SELECT 1")

            with pytest.raises(Unavailable):
                await bounded(run())
            assert await bounded(backend.kv.get("k")) == "v"
        finally:
            await bounded(backend.close())


async def test_rollback_on_a_stuck_connection_is_bounded(
    pg_server: PgServer, pg_driver: str
) -> None:
    """A statement in a transaction fails on the server, then the server stops answering
    before the ROLLBACK is answered: the statement's error reaches the caller after at most
    ``command_timeout`` more, and the connection is replaced."""
    async with relay_to(pg_server.url_for(pg_driver)) as (relay, url):
        backend = await connect(url, **STUCK)
        try:
            await backend.kv.set("k", "v")
            [pipe] = relay.open_pipes()

            async def run() -> None:
                async with backend.database.transaction() as tx:
                    try:
                        await tx.fetch("SELECT 1 / 0")
                    finally:
                        pipe.freeze()

            with pytest.raises(BackendError) as info:
                await bounded(run())
            assert "22012" in str(info.value)
            assert await bounded(backend.kv.get("k")) == "v"
        finally:
            await bounded(backend.close())


@pytest.fixture
async def caller_pool(pg_server: PgServer) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(
        pg_server.url, min_size=1, max_size=4, server_settings={"application_name": "uwsx"}
    )
    try:
        yield pool
    finally:
        await bounded(pool.close())


def _terminate(server: PgServer, pid: int) -> None:
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def test_terminated_session_from_the_callers_asyncpg_pool(
    pg_server: PgServer, caller_pool: Any
) -> None:
    """Without ``dsn=`` the LISTEN session is held from the caller's asyncpg pool. When the
    server terminates it (asyncpg then hands the slot back to the pool by itself), the
    subscription reconnects, re-LISTENs and reports the loss, and delivery resumes; the
    caller's pool stays open."""
    backend = await connect(caller_pool, ping_interval=600.0)
    try:
        got: list[str] = []
        losses: list[LossWindow] = []
        sub = await backend.pubsub.subscribe(
            ["news"], lambda _c, m: got.append(m), on_loss=losses.append
        )
        await backend.pubsub.publish("news", "before")
        await until(lambda: "before" in got, "delivery before the loss")
        session = backend.pubsub._conn
        assert session is not None
        _terminate(pg_server, session.pid)
        await until(lambda: bool(losses) and sub.healthy, "re-LISTEN and on_loss")
        await backend.pubsub.publish("news", "after")
        await until(lambda: "after" in got, "delivery after the loss")
    finally:
        await bounded(backend.close())
    assert not caller_pool.is_closing()
    assert await bounded(caller_pool.fetchval("SELECT 1")) == 1


async def test_terminated_session_lock_from_the_callers_asyncpg_pool(
    pg_server: PgServer, caller_pool: Any
) -> None:
    """A session lock held on a session from the caller's pool: after the server terminates
    that session the lock reads as lost (not a driver error) and can be taken again."""
    backend = await connect(caller_pool)
    try:
        lock = await backend.locks.try_session_lock("leader")
        assert lock is not None
        session = backend.locks._conn
        assert session is not None
        _terminate(pg_server, session.pid)
        await until(lambda: not session.alive, "the session's end to be noticed")
        assert not await bounded(backend.locks.session_lock_held(lock))
        again = await bounded(backend.locks.try_session_lock("leader"))
        assert again is not None
        assert again.fence > lock.fence
    finally:
        await bounded(backend.close())


async def test_connection_lost_inside_a_transaction_is_unavailable(pg_url: str) -> None:
    """The server ends the session in the middle of a transaction (before COMMIT): the caller
    gets Unavailable (never a driver error from cleaning up the dead connection) and the next
    operation runs on a new connection."""
    backend = await connect(pg_url, pool_min_size=1, pool_max_size=1)
    try:
        await backend.kv.set("k", "v")

        async def run() -> None:
            async with backend.database.transaction() as tx:
                await tx.fetch("SELECT pg_terminate_backend(pg_backend_pid())")

        with pytest.raises(Unavailable):
            await bounded(run())
        assert await bounded(backend.kv.get("k")) == "v"
    finally:
        await bounded(backend.close())


async def test_dead_connections_of_a_close_returns_psycopg_pool(pg_server: PgServer) -> None:
    """The caller's psycopg pool was made with ``close_returns=True`` (``close()`` hands a
    connection back instead of closing it). Idle connections the server ended are still
    dropped before use, never handed back twice: the next operation succeeds."""
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        pg_server.url,
        min_size=1,
        max_size=1,
        open=False,
        close_returns=True,
        kwargs={"autocommit": True, "application_name": "uwsx"},
    )
    await bounded(pool.open(wait=True))
    try:
        backend = await connect(pool)
        try:
            await backend.kv.set("k", "v")
            with psycopg.connect(pg_server.url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'uwsx' AND pid <> pg_backend_pid()"
                )

            async def dead() -> bool:
                async with await psycopg.AsyncConnection.connect(pg_server.url) as check:
                    cur = await check.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'uwsx'"
                    )
                    row = await cur.fetchone()
                return row is not None and row[0] == 0

            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT
            while not await dead():
                assert loop.time() < deadline, "the sessions did not end"
                await asyncio.sleep(0.05)
            assert await bounded(backend.kv.get("k")) == "v"
        finally:
            await bounded(backend.close())
    finally:
        await bounded(pool.close())


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_failed_probe_closes_the_owned_pool(driver: str) -> None:
    """With ``pool_min_size=0`` opening the pool contacts no server, so an unreachable server
    is found by the first query: ``connect`` raises Unavailable and leaves no pool behind
    (no pool task still running, nothing to warn about later)."""
    from tests.integration.harness import free_port

    before = asyncio.all_tasks()
    url = f"postgresql+{driver}://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(Unavailable):
        await bounded(connect(url, pool_min_size=0, connect_timeout=1.0))
    for _ in range(3):
        await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert left == [], left


async def test_statement_after_close_is_unavailable(pg_url: str) -> None:
    """A statement reaching the driver after ``close()`` (``publish`` does not go through the
    closed database handle) is refused as Unavailable, not a stray driver error."""
    backend = await connect(pg_url)
    await backend.pubsub.publish("news", "before")
    await bounded(backend.close())
    with pytest.raises(Unavailable):
        await bounded(backend.pubsub.publish("news", "after"))


async def test_statement_in_flight_during_close_returns_its_rows(
    pg_server: PgServer, pg_driver: str
) -> None:
    """``close()`` starts while a statement waits on the server: the statement still returns
    its rows (its connection goes back to the pool it came from) and close finishes."""
    backend = await connect(pg_server.url_for(pg_driver), connect_timeout=WAIT)
    driver: Any = backend.database.driver
    async with await psycopg.AsyncConnection.connect(pg_server.url, autocommit=True) as blocker:
        await blocker.execute("SELECT pg_advisory_lock(4242)")
        running = asyncio.ensure_future(
            backend.database.fetch("SELECT pg_advisory_lock(4242), pg_advisory_unlock(4242)")
        )

        async def waiting() -> bool:
            cur = await blocker.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            row = await cur.fetchone()
            return row is not None and row[0] == 1

        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not await waiting():
            assert loop.time() < deadline, "the statement did not reach the lock"
            await asyncio.sleep(0.02)
        closing = asyncio.ensure_future(backend.close())
        await until(lambda: driver._pool is None, "close() to drop the pool")
        await blocker.execute("SELECT pg_advisory_unlock(4242)")
        assert len(await bounded(running)) == 1
        await bounded(closing)


async def test_cancelled_begin_leaves_the_callers_psycopg_connection_idle(
    pg_server: PgServer,
) -> None:
    """A transaction on the caller's psycopg connection is cancelled while its BEGIN is on the
    way; the BEGIN then completes. The connection must not stay inside that transaction:
    later writes through it would never commit."""
    async with relay_to(pg_server.url_for("psycopg")) as (relay, url):
        plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
        async with await psycopg.AsyncConnection.connect(plain, autocommit=True) as conn:
            backend = await connect(conn, dsn=plain, ping_interval=600.0)
            try:
                await backend.kv.set("k", "v")
                [pipe] = relay.open_pipes()
                pipe.freeze()
                seen = len(relay.pipes)

                async def run() -> None:
                    async with backend.database.transaction() as tx:
                        await tx.fetch("SELECT 1")

                task = asyncio.ensure_future(run())
                await bounded(pipe.holding.wait())
                task.cancel()
                # psycopg sends a cancel request on a connection of its own; once it is
                # done, let the BEGIN through.
                await until(
                    lambda: len(relay.pipes) > seen and not relay.pipes[-1].open,
                    "the cancel request",
                )
                pipe._thawed.set()
                with pytest.raises(asyncio.CancelledError):
                    await bounded(task)
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                await bounded(backend.kv.set("k", "w"))
            finally:
                await bounded(backend.close())
    checker = await connect(pg_server.url_for("psycopg"))
    try:
        rows = await checker.database.fetch(
            "SELECT count(*) FROM uwsx_kv WHERE key = $1::text", backend.key_prefix + "k"
        )
        assert rows[0][0] == 1
    finally:
        await checker.close()


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_engine_that_cannot_connect_is_unavailable(driver: str) -> None:
    """The caller's SQLAlchemy engine cannot reach its server: SQLAlchemy wraps the driver's
    error in its own exception types, and the acquire failure is still Unavailable."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from tests.integration.harness import free_port

    engine = create_async_engine(f"postgresql+{driver}://postgres@127.0.0.1:{free_port()}/postgres")
    try:
        with pytest.raises(Unavailable):
            await bounded(connect(engine, connect_timeout=1.0))
    finally:
        await engine.dispose()
