"""The psycopg 3 shim: an ``AsyncConnectionPool`` (owned or the caller's) or one connection.

Statements run through ``AsyncRawCursor`` so the SQL layer's ``$n`` placeholders reach the
server unchanged. psycopg reads a socket only while a command runs, so this shim does two
things asyncpg does by itself: it drops pooled connections whose socket turned readable while
idle (the server closed them, e.g. after a restart) before using them, and a dedicated session
watches its socket between commands to deliver notifications and notice termination at once.

psycopg answers a cancelled command by sending a cancel request and waiting (up to 5 s each)
for the request to go out and for the server's reply, closing the connection if either fails;
that wait is psycopg's, inside the cancelled call. A pooled connection whose use ended in a
cancellation, a timeout or a lost connection (:func:`~uwsx_postgres._driver.reusable`) goes
back to the pool only if it is idle again, else it is closed first, so the pool never resets
it or hands it out in an unknown state, and ``close()`` has nothing to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import AsyncConnectionPool, PoolClosed

from uwsx_postgres._driver import (
    Executor,
    LostCallback,
    NotifyCallback,
    Phase,
    Row,
    lost_state,
    quote_ident,
    reusable,
    translate,
)

__all__ = ["PsycopgDriver"]

_IDLE = pq.TransactionStatus.IDLE
_ACTIVE = pq.TransactionStatus.ACTIVE
_INTRANS = pq.TransactionStatus.INTRANS
_INERROR = pq.TransactionStatus.INERROR
_LOST_TYPES: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError, PoolClosed)
_ERRORS: tuple[type[BaseException], ...] = (psycopg.Error, *_LOST_TYPES)


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) if isinstance(exc, psycopg.Error) else None


def _lost(exc: BaseException) -> bool:
    """The connection is gone or in an unknown state after ``exc``."""
    sqlstate = _sqlstate(exc)
    if isinstance(exc, _LOST_TYPES) or lost_state(sqlstate):
        return True
    return isinstance(exc, psycopg.OperationalError) and sqlstate is None


def _fail(exc: BaseException, phase: Phase, where: str) -> BaseException:
    return translate(exc, phase, sqlstate=_sqlstate(exc), lost=_lost(exc), where=where)


def _stale(conn: Any) -> bool:
    """True when an idle connection cannot be used: closed, broken, or its socket has data
    (the server's goodbye and EOF) although no command is running."""
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return bool(readable)


async def _drop(conn: Any) -> None:
    """Close a pooled ``conn`` for real before it goes back with ``putconn`` (which then
    replaces it): ``close()`` on a connection of a pool made with ``close_returns=True`` hands
    it back to the pool instead, and the ``putconn`` after it would fail."""
    if getattr(conn, "_pool", None) is not None:
        conn.pgconn.finish()  # what psycopg itself does with a connection it cannot trust
    else:
        await conn.close()


async def _run(conn: Any, sql: str, args: Sequence[object], timeout: float | None) -> list[Row]:
    """One statement; on a caller's non-autocommit connection, committed (or rolled back)."""
    try:
        async with asyncio.timeout(timeout):
            cur = psycopg.AsyncRawCursor(conn)
            try:
                await cur.execute(sql, list(args))
                rows: list[Row] = await cur.fetchall() if cur.description is not None else []
            finally:
                await cur.close()
            if not conn.autocommit and conn.info.transaction_status == _INTRANS:
                await conn.commit()
            return rows
    except BaseException:
        if not conn.autocommit and conn.info.transaction_status in (_INTRANS, _INERROR):
            with contextlib.suppress(psycopg.Error):
                await conn.rollback()
        raise


class _Tx:
    def __init__(self, conn: Any, timeout: float | None) -> None:
        self._conn = conn
        self._timeout = timeout

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        try:
            async with asyncio.timeout(self._timeout):
                cur = psycopg.AsyncRawCursor(self._conn)
                await cur.execute(sql, list(args))
                return await cur.fetchall() if cur.description is not None else []
        except _ERRORS as exc:
            raise _fail(exc, "tx", "transaction") from exc

    async def execute(self, sql: str) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._conn.execute(sql.encode(), prepare=False)
        except _ERRORS as exc:
            raise _fail(exc, "tx", "transaction") from exc


class PsycopgDedicated:
    """A held connection whose socket is watched between commands."""

    def __init__(self, conn: Any, timeout: float | None) -> None:
        self._conn = conn
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._notify: NotifyCallback | None = None
        self._lost: LostCallback | None = None
        self._closing = False
        self._dead = False
        self._fd = conn.fileno()
        self._loop = asyncio.get_running_loop()
        self._pid: int = conn.info.backend_pid
        conn.add_notify_handler(self._handle)
        self._watch(True)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def alive(self) -> bool:
        return not (self._closing or self._dead or self._conn.closed)

    def _watch(self, on: bool) -> None:
        if on and self.alive:
            self._loop.add_reader(self._fd, self._readable)
        else:
            self._loop.remove_reader(self._fd)

    def _handle(self, notify: Any) -> None:
        if self._notify is not None:
            self._notify(notify.channel, notify.payload)

    def _readable(self) -> None:
        try:
            self._conn.pgconn.consume_input()
        except psycopg.Error as exc:
            self._died(exc)
            return
        self._dispatch_buffered()

    def _dispatch_buffered(self) -> None:
        """Deliver notifications libpq already holds (read from the socket, not parsed)."""
        pgconn = self._conn.pgconn
        try:
            encoding = self._conn.info.encoding
            while (n := pgconn.notifies()) is not None:
                if self._notify is not None:
                    self._notify(n.relname.decode(encoding), n.extra.decode(encoding))
            broken = pgconn.status == pq.ConnStatus.BAD
        except psycopg.Error as exc:
            self._died(exc)
            return
        if broken:
            self._died(None)

    def _died(self, exc: BaseException | None) -> None:
        if self._dead:
            return
        self._dead = True
        self._loop.remove_reader(self._fd)
        if not self._closing and self._lost is not None:
            self._lost(exc)

    @asynccontextmanager
    async def _command(self, where: str) -> AsyncIterator[None]:
        async with self._lock:
            if not self.alive:
                raise _fail(ConnectionError("session closed"), "acquire", where)
            self._watch(False)
            try:
                yield
            except BaseException as exc:
                # Including a cancellation: psycopg may have closed the connection meanwhile.
                if self._conn.closed or self._conn.broken or isinstance(exc, TimeoutError):
                    self._died(exc)
                if isinstance(exc, _ERRORS):
                    raise _fail(exc, "write", where) from exc
                raise
            finally:
                self._watch(True)
                if self.alive:
                    self._dispatch_buffered()

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        async with self._command("session"):
            return await _run(self._conn, sql, args, self._timeout)

    async def listen(self, channels: Sequence[str]) -> None:
        if channels:
            sql = "; ".join(f"LISTEN {quote_ident(c)}" for c in channels)
            async with self._command("listen"), asyncio.timeout(self._timeout):
                await self._conn.execute(sql.encode(), prepare=False)

    async def unlisten(self, channels: Sequence[str]) -> None:
        if channels:
            sql = "; ".join(f"UNLISTEN {quote_ident(c)}" for c in channels)
            async with self._command("unlisten"), asyncio.timeout(self._timeout):
                await self._conn.execute(sql.encode(), prepare=False)

    def on_notify(self, callback: NotifyCallback) -> None:
        self._notify = callback

    def on_lost(self, callback: LostCallback) -> None:
        self._lost = callback

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        await self._conn.close()


class PsycopgDriver:
    """Runs SQL on a psycopg pool, or serialised on one connection."""

    name = "psycopg"

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any] | None = None,
        conn: Any = None,
        owns: bool,
        dsn: str | None,
        connect_kwargs: dict[str, Any] | None = None,
        command_timeout: float | None,
        connect_timeout: float,
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._conn_lock = asyncio.Lock()
        self._owns = owns
        self._dsn = dsn
        self._kwargs = dict(connect_kwargs or {})
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
    ) -> PsycopgDriver:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": "uwsx",
            "connect_timeout": max(1, round(connect_timeout)),
        }
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=connect_timeout,
            name="uwsx",
        )
        try:
            await pool.open(wait=True, timeout=connect_timeout)
        except _ERRORS as exc:
            await pool.close()
            raise _fail(exc, "acquire", "connect") from exc
        driver = cls(
            pool=pool,
            owns=True,
            dsn=dsn,
            connect_kwargs=kwargs,
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
            async with self._conn_lock:
                if self._conn.closed:
                    raise _fail(ConnectionError("connection is closed"), "acquire", "acquire")
                yield self._conn
            return
        pool = self._pool
        if pool is None:
            raise _fail(ConnectionError("backend closed"), "acquire", "acquire")
        conn = None
        try:
            for _ in range(pool.max_size + 1):
                conn = await pool.getconn(timeout=self._connect_timeout)
                if not _stale(conn):
                    break
                await _drop(conn)
                await pool.putconn(conn)
                conn = None
        except Exception as exc:
            # Nothing was sent, whatever failed (a SQLAlchemy engine wraps driver errors).
            raise _fail(exc, "acquire", "acquire") from exc
        if conn is None:
            raise _fail(ConnectionError("no usable pooled connection"), "acquire", "acquire")
        try:
            yield conn
        except BaseException as exc:
            # After a cancellation or timeout the connection is kept only if psycopg got the
            # server's answer to its cancel request (idle again); the pool would otherwise
            # reset it, or hand it out, in an unknown state.
            status = conn.info.transaction_status
            if status == _ACTIVE or (not reusable(exc, _lost) and status != _IDLE):
                await _drop(conn)
            raise
        finally:
            await pool.putconn(conn)

    async def fetch(
        self, sql: str, args: Sequence[object] = (), *, write: bool = True
    ) -> list[Row]:
        async with self._connection() as conn:
            try:
                return await _run(conn, sql, args, self._timeout)
            except _ERRORS as exc:
                raise _fail(exc, "write" if write else "read", "statement") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._connection() as conn:
            auto = conn.autocommit
            try:
                # Inside the block that rolls back: a BEGIN interrupted by a cancellation may
                # still complete, and the caller's connection must not stay in it.
                try:
                    if auto:
                        # Bounded like every statement: a stuck server must not hold it.
                        async with asyncio.timeout(self._timeout):
                            await conn.execute(b"BEGIN", prepare=False)
                except _ERRORS as exc:
                    raise _fail(exc, "tx", "begin") from exc
                yield _Tx(conn, self._timeout)
            except BaseException as exc:
                # A pooled connection in an unknown state is closed by _connection; the
                # caller's one is kept and must leave the transaction.
                if (reusable(exc, _lost) or self._conn is not None) and not conn.closed:
                    try:
                        async with asyncio.timeout(self._timeout):
                            await (
                                conn.execute(b"ROLLBACK", prepare=False)
                                if auto
                                else conn.rollback()
                            )
                    except _ERRORS:
                        await _drop(conn)
                raise
            try:
                async with asyncio.timeout(self._timeout):
                    await (conn.execute(b"COMMIT", prepare=False) if auto else conn.commit())
            except _ERRORS as exc:
                raise _fail(exc, "commit", "commit") from exc

    async def dedicated(self) -> PsycopgDedicated:
        dsn, kwargs = self._dsn, self._kwargs
        if dsn is None:
            raise _fail(
                ConnectionError("no connection string for a dedicated session; pass dsn="),
                "acquire",
                "session",
            )
        try:
            async with asyncio.timeout(self._connect_timeout):
                conn = await psycopg.AsyncConnection.connect(dsn, **{**kwargs, "autocommit": True})
        except _ERRORS as exc:
            raise _fail(exc, "acquire", "session") from exc
        return PsycopgDedicated(conn, self._timeout)

    async def close(self) -> None:
        if self._owns and self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close(timeout=self._connect_timeout)
