"""The asyncpg shim: a pool (owned or the caller's), one connection, or nothing else.

asyncpg reads every connection continuously, so a connection the server closed is noticed at
once (``is_closed()``; the pool replaces it on the next acquire) and notifications and
termination arrive through callbacks.

**Cancelled statements.** When a statement is cancelled or times out, asyncpg sends the server
a cancel request and will not use the connection again until the server acknowledges it; its
pool waits for that on release, and ``Pool.close()`` waits for the release. A stuck or
unreachable server never acknowledges, so a connection whose use ended in a cancellation, a
timeout or a lost connection (:func:`~uwsx_postgres._driver.reusable`) is released with a
bound of ``CANCEL_GRACE`` seconds instead of ``connect_timeout``: long enough for a responsive
server (the statement is then cancelled there, not left to apply later, and the connection is
kept), after which asyncpg terminates it; so are the ROLLBACK of an interrupted transaction
and the ``close()`` of a dedicated session whose command was cancelled. A release interrupted
by another cancellation, and a connection borrowed from a SQLAlchemy engine, are terminated at
once. Cancelled work therefore holds up neither ``close()`` nor the cancelled call for longer
than ``CANCEL_GRACE``. Dedicated sessions are in :mod:`uwsx_postgres._driver_asyncpg_session`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import asyncpg

from uwsx_postgres._driver import (
    Executor,
    Phase,
    Row,
    lost_state,
    reusable,
    translate,
)

if TYPE_CHECKING:
    from uwsx_postgres._driver_asyncpg_session import AsyncpgDedicated

__all__ = ["CANCEL_GRACE", "AsyncpgDriver"]

#: Seconds a connection whose statement was cancelled (or timed out) may wait for the server
#: to acknowledge the cancel request before it is terminated.
CANCEL_GRACE = 1.0

_LOST_TYPES: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *_LOST_TYPES)
#: asyncpg's client-side argument error (an InterfaceError, raised before anything is sent);
#: ``asyncpg.DataError`` is the server's SQLSTATE 22000 class.
_ARGUMENT_ERROR: type[BaseException] = asyncpg.exceptions._base.DataError


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None


def _lost(exc: BaseException) -> bool:
    """The connection is gone or in an unknown state after ``exc``."""
    if isinstance(exc, _LOST_TYPES) and not isinstance(exc, _ARGUMENT_ERROR):
        return True
    return lost_state(_sqlstate(exc))


def _fail(exc: BaseException, phase: Phase, where: str) -> BaseException:
    return translate(exc, phase, sqlstate=_sqlstate(exc), lost=_lost(exc), where=where)


def _discard(conn: Any) -> None:
    """Terminate ``conn`` (a pool's proxy returns to its pool as a free slot); a proxy asyncpg
    already released after terminating the connection itself is left alone."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


def _is_closed(conn: Any) -> bool:
    """``conn.is_closed()``, also for a pool's proxy that asyncpg detached when the server
    ended the connection (it hands the slot back to the pool by itself, and every method of
    the proxy then raises InterfaceError)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


async def _let_go(release: Any, conn: Any, timeout: float) -> None:
    """``await release(conn, timeout)``; terminate ``conn`` when that fails or is cancelled
    (asyncpg shields a pool release, which would go on in the background)."""
    try:
        await release(conn, timeout)
    except _ERRORS:
        _discard(conn)
    except asyncio.CancelledError:
        _discard(conn)
        raise


async def _release(pool: Any, conn: Any, timeout: float) -> None:
    await pool.release(conn, timeout=timeout)


def _rows(records: list[Any]) -> list[Row]:
    return [tuple(r) for r in records]


class _Tx:
    def __init__(self, conn: Any, timeout: float | None) -> None:
        self._conn = conn
        self._timeout = timeout

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        try:
            return _rows(await self._conn.fetch(sql, *args, timeout=self._timeout))
        except _ERRORS as exc:
            raise _fail(exc, "tx", "transaction") from exc

    async def execute(self, sql: str) -> None:
        try:
            await self._conn.execute(sql, timeout=self._timeout)
        except _ERRORS as exc:
            raise _fail(exc, "tx", "transaction") from exc


class AsyncpgDriver:
    """Runs SQL on an asyncpg pool, or serialised on one connection."""

    name = "asyncpg"

    def __init__(
        self,
        *,
        pool: Any = None,
        conn: Any = None,
        owns: bool,
        dsn: str | None,
        command_timeout: float | None,
        connect_timeout: float,
    ) -> None:
        self._pool = pool
        # A SQLAlchemy engine's pool (EnginePool), fixed here: close() drops ``_pool``.
        self._engine = pool is not None and not isinstance(pool, asyncpg.Pool)
        self._conn = conn
        self._conn_lock = asyncio.Lock()
        self._owns = owns
        self._dsn = dsn
        self._timeout = command_timeout
        self._connect_timeout = connect_timeout
        self.server_version = ""

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int,
        max_size: int,
        command_timeout: float | None,
        connect_timeout: float,
    ) -> AsyncpgDriver:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                server_settings={"application_name": "uwsx"},
            )
        except _ERRORS as exc:
            raise _fail(exc, "acquire", "connect") from exc
        driver = cls(
            pool=pool,
            owns=True,
            dsn=dsn,
            command_timeout=command_timeout,
            connect_timeout=connect_timeout,
        )
        try:
            await driver.probe()
        except BaseException:
            # Nobody else holds the pool yet (with min_size=0 the probe is its first contact).
            await driver.close()
            raise
        return driver

    async def probe(self) -> None:
        rows = await self.fetch("SELECT current_setting('server_version')", (), write=False)
        self.server_version = str(rows[0][0])

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        if self._conn is not None:
            # The caller's connection is not ours to terminate; asyncpg waits for a pending
            # cancellation before its next statement.
            async with self._conn_lock:
                if self._conn.is_closed():
                    raise _fail(ConnectionError("connection is closed"), "acquire", "acquire")
                yield self._conn
            return
        pool = self._pool
        if pool is None:
            raise _fail(ConnectionError("backend closed"), "acquire", "acquire")
        try:
            conn = await pool.acquire(timeout=self._connect_timeout)
        except Exception as exc:
            # Nothing was sent, whatever failed (a SQLAlchemy engine wraps driver errors).
            raise _fail(exc, "acquire", "acquire") from exc
        bound = self._connect_timeout
        try:
            yield conn
        except BaseException as exc:
            if not reusable(exc, _lost):
                bound = min(CANCEL_GRACE, bound)
                if self._engine:
                    # An engine's pool would wait for the acknowledgement without a bound.
                    _discard(conn)
            raise
        finally:
            # The pool it came from: close() may have cleared ``_pool`` meanwhile.
            await _let_go(partial(_release, pool), conn, bound)

    async def fetch(
        self, sql: str, args: Sequence[object] = (), *, write: bool = True
    ) -> list[Row]:
        async with self._connection() as conn:
            try:
                return _rows(await conn.fetch(sql, *args, timeout=self._timeout))
            except _ERRORS as exc:
                raise _fail(exc, "write" if write else "read", "statement") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._connection() as conn:
            try:
                try:
                    await conn.execute("BEGIN", timeout=self._timeout)
                except _ERRORS as exc:
                    raise _fail(exc, "tx", "begin") from exc
                yield _Tx(conn, self._timeout)
            except BaseException as exc:
                await self._rollback(conn, exc)
                raise
            try:
                await conn.execute("COMMIT", timeout=self._timeout)
            except _ERRORS as exc:
                raise _fail(exc, "commit", "commit") from exc

    async def _rollback(self, conn: Any, exc: BaseException) -> None:
        """End the transaction ``exc`` interrupted; terminate the connection if that fails.

        After a cancellation the ROLLBACK first waits for the cancel request's answer, so it
        gets the short bound (see the module docstring)."""
        if _is_closed(conn):
            return
        clean = reusable(exc, _lost)
        if not clean and self._engine:
            return  # an engine's connection: discarded by _connection
        bound = self._timeout if clean else min(CANCEL_GRACE, self._connect_timeout)
        try:
            await conn.execute("ROLLBACK", timeout=bound)
        except _ERRORS:
            _discard(conn)

    async def dedicated(self) -> AsyncpgDedicated:
        from uwsx_postgres._driver_asyncpg_session import AsyncpgDedicated

        if self._dsn is not None:
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._connect_timeout,
                    server_settings={"application_name": "uwsx"},
                )
            except _ERRORS as exc:
                raise _fail(exc, "acquire", "connect") from exc

            async def close(c: Any, timeout: float) -> None:
                await c.close(timeout=timeout)

            return AsyncpgDedicated(
                conn, close, timeout=self._timeout, connect_timeout=self._connect_timeout
            )
        if self._pool is None:
            raise _fail(
                ConnectionError("a single connection cannot open another; pass dsn="),
                "acquire",
                "session",
            )
        try:
            held = await self._pool.acquire(timeout=self._connect_timeout)
        except _ERRORS as exc:
            raise _fail(exc, "acquire", "session") from exc
        pool = self._pool

        async def release(c: Any, timeout: float) -> None:
            await pool.release(c, timeout=timeout)

        return AsyncpgDedicated(
            held, release, timeout=self._timeout, connect_timeout=self._connect_timeout
        )

    async def close(self) -> None:
        if self._owns and self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self._connect_timeout)
            except _ERRORS:
                pool.terminate()
