"""The asyncpg shim: a pool (owned or the caller's), one connection, or nothing else.

asyncpg reads every connection continuously, so a connection the server closed is noticed at
once (``is_closed()``; the pool replaces it on the next acquire) and notifications and
termination arrive through callbacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from uwsx_postgres._driver import (
    Executor,
    LostCallback,
    NotifyCallback,
    Phase,
    Row,
    translate,
)

__all__ = ["AsyncpgDriver"]

_LOST_TYPES: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *_LOST_TYPES)


def _fail(exc: BaseException, phase: Phase, where: str) -> BaseException:
    sqlstate = getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None
    lost = isinstance(exc, _LOST_TYPES) and not isinstance(exc, asyncpg.DataError)
    return translate(exc, phase, sqlstate=sqlstate, lost=lost, where=where)


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


class AsyncpgDedicated:
    """A held connection: LISTEN through asyncpg listeners, locks through plain queries."""

    def __init__(self, conn: Any, release: Any, timeout: float | None) -> None:
        self._conn = conn
        self._release = release
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._notify: NotifyCallback | None = None
        self._lost: LostCallback | None = None
        self._closing = False
        self._pid: int = conn.get_server_pid()
        conn.add_termination_listener(self._terminated)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def alive(self) -> bool:
        return not self._closing and not self._conn.is_closed()

    def _terminated(self, _conn: Any) -> None:
        if not self._closing and self._lost is not None:
            self._lost(None)

    def _on_message(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        if self._notify is not None:
            self._notify(channel, payload)

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        async with self._lock:
            try:
                return _rows(await self._conn.fetch(sql, *args, timeout=self._timeout))
            except _ERRORS as exc:
                raise _fail(exc, "write", "session") from exc

    async def listen(self, channels: Sequence[str]) -> None:
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    for channel in channels:
                        await self._conn.add_listener(channel, self._on_message)
            except _ERRORS as exc:
                raise _fail(exc, "read", "listen") from exc

    async def unlisten(self, channels: Sequence[str]) -> None:
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    for channel in channels:
                        await self._conn.remove_listener(channel, self._on_message)
            except _ERRORS as exc:
                raise _fail(exc, "read", "unlisten") from exc

    def on_notify(self, callback: NotifyCallback) -> None:
        self._notify = callback

    def on_lost(self, callback: LostCallback) -> None:
        self._lost = callback

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._conn.remove_termination_listener(self._terminated)
        try:
            await self._release(self._conn)
        except _ERRORS:
            self._conn.terminate()


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
        await driver.probe()
        return driver

    async def probe(self) -> None:
        rows = await self.fetch("SELECT current_setting('server_version')", (), write=False)
        self.server_version = str(rows[0][0])

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        if self._conn is not None:
            async with self._conn_lock:
                if self._conn.is_closed():
                    raise _fail(ConnectionError("connection is closed"), "acquire", "acquire")
                yield self._conn
            return
        try:
            conn = await self._pool.acquire(timeout=self._connect_timeout)
        except _ERRORS as exc:
            raise _fail(exc, "acquire", "acquire") from exc
        try:
            yield conn
        finally:
            try:
                await self._pool.release(conn, timeout=self._connect_timeout)
            except _ERRORS:
                conn.terminate()

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
                await conn.execute("BEGIN", timeout=self._timeout)
            except _ERRORS as exc:
                raise _fail(exc, "tx", "begin") from exc
            try:
                yield _Tx(conn, self._timeout)
            except BaseException:
                if not conn.is_closed():
                    try:
                        await conn.execute("ROLLBACK", timeout=self._timeout)
                    except _ERRORS:
                        conn.terminate()
                raise
            try:
                await conn.execute("COMMIT", timeout=self._timeout)
            except _ERRORS as exc:
                raise _fail(exc, "commit", "commit") from exc

    async def dedicated(self) -> AsyncpgDedicated:
        if self._dsn is not None:
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._connect_timeout,
                    server_settings={"application_name": "uwsx"},
                )
            except _ERRORS as exc:
                raise _fail(exc, "acquire", "connect") from exc

            async def close(c: Any) -> None:
                await c.close(timeout=self._connect_timeout)

            return AsyncpgDedicated(conn, close, self._timeout)
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
        pool, timeout = self._pool, self._connect_timeout

        async def release(c: Any) -> None:
            await pool.release(c, timeout=timeout)

        return AsyncpgDedicated(held, release, self._timeout)

    async def close(self) -> None:
        if self._owns and self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self._connect_timeout)
            except _ERRORS:
                pool.terminate()
