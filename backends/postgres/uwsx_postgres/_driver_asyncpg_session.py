"""Dedicated asyncpg sessions: the LISTEN connection and the session-lock connection.

``LISTEN`` / ``UNLISTEN`` of several channels is one statement (one round trip): the session's
callback is entered into the connection's listener table directly, which is what asyncpg's
``add_listener`` does after its one-channel ``LISTEN``, so notifications are still parsed and
dispatched by asyncpg. Should a future asyncpg lack that table, ``add_listener`` /
``remove_listener`` run per channel instead.

A session whose command was cancelled, timed out or lost is closed with the short bound of
:data:`~uwsx_postgres._driver_asyncpg.CANCEL_GRACE` (see that module).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from uwsx_postgres._driver import LostCallback, NotifyCallback, Phase, Row, quote_ident, reusable
from uwsx_postgres._driver_asyncpg import (
    _ERRORS,
    CANCEL_GRACE,
    _discard,
    _fail,
    _is_closed,
    _let_go,
    _lost,
    _rows,
)

__all__ = ["AsyncpgDedicated"]

#: ``release(conn, timeout)``: hand the connection back (pool) or close it (own connection).
Release = Callable[[Any, float], Awaitable[None]]


def _listener_table(conn: Any) -> dict[str, set[Any]] | None:
    """The ``channel -> callbacks`` table asyncpg dispatches notifications from, if present."""
    table = getattr(conn, "_listeners", None)
    wrap = getattr(getattr(asyncpg.connection, "_Callback", None), "from_callable", None)
    return table if isinstance(table, dict) and callable(wrap) else None


class AsyncpgDedicated:
    """A held connection: LISTEN through asyncpg listeners, locks through plain queries."""

    def __init__(
        self, conn: Any, release: Release, *, timeout: float | None, connect_timeout: float
    ) -> None:
        self._conn = conn
        self._release = release
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._lock = asyncio.Lock()
        self._notify: NotifyCallback | None = None
        self._lost: LostCallback | None = None
        self._closing = False
        # A command ended by cancellation, timeout or loss: close with the short bound.
        self._abandoned = False
        self._pid: int = conn.get_server_pid()
        self._table = _listener_table(conn)
        self._callback: Any = (
            asyncpg.connection._Callback.from_callable(self._on_message)
            if self._table is not None
            else None
        )
        conn.add_termination_listener(self._terminated)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def alive(self) -> bool:
        return not self._closing and not _is_closed(self._conn)

    def _terminated(self, _conn: Any) -> None:
        if not self._closing and self._lost is not None:
            self._lost(None)

    def _on_message(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        if self._notify is not None:
            self._notify(channel, payload)

    @contextlib.asynccontextmanager
    async def _command(self, phase: Phase, where: str) -> AsyncIterator[None]:
        async with self._lock:
            try:
                yield
            except BaseException as exc:
                if not reusable(exc, _lost):
                    self._abandoned = True
                if isinstance(exc, _ERRORS):
                    raise _fail(exc, phase, where) from exc
                raise

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        async with self._command("write", "session"):
            return _rows(await self._conn.fetch(sql, *args, timeout=self._timeout))

    async def listen(self, channels: Sequence[str]) -> None:
        async with self._command("read", "listen"):
            table, callback = self._table, self._callback
            if table is None:
                async with asyncio.timeout(self._timeout):
                    for channel in channels:
                        await self._conn.add_listener(channel, self._on_message)
                return
            new = [c for c in dict.fromkeys(channels) if callback not in table.get(c, ())]
            if not new:
                return
            # Entered first: a notification can arrive before the statement's reply is read.
            for channel in new:
                table.setdefault(channel, set()).add(callback)
            try:
                sql = "; ".join(f"LISTEN {quote_ident(c)}" for c in new)
                await self._conn.execute(sql, timeout=self._timeout)
            except BaseException:
                self._forget(new)
                raise

    async def unlisten(self, channels: Sequence[str]) -> None:
        async with self._command("read", "unlisten"):
            if self._table is None:
                async with asyncio.timeout(self._timeout):
                    for channel in channels:
                        await self._conn.remove_listener(channel, self._on_message)
                return
            gone = self._forget(channels)
            if gone and not _is_closed(self._conn):
                sql = "; ".join(f"UNLISTEN {quote_ident(c)}" for c in gone)
                await self._conn.execute(sql, timeout=self._timeout)

    def _forget(self, channels: Sequence[str]) -> list[str]:
        """Drop our callback from ``channels``; returns those left without any callback."""
        table, gone = self._table, []
        assert table is not None
        for channel in dict.fromkeys(channels):
            callbacks = table.get(channel)
            if callbacks is None or self._callback not in callbacks:
                continue
            callbacks.discard(self._callback)
            if not callbacks:
                del table[channel]
                gone.append(channel)
        return gone

    def on_notify(self, callback: NotifyCallback) -> None:
        self._notify = callback

    def on_lost(self, callback: LostCallback) -> None:
        self._lost = callback

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._table is not None:
            # Released to a pool, the reset runs UNLISTEN *; asyncpg warns about callbacks left.
            self._forget(list(self._table))
        if _is_closed(self._conn):
            _discard(self._conn)
            return
        with contextlib.suppress(asyncpg.InterfaceError):
            self._conn.remove_termination_listener(self._terminated)
        bound = min(CANCEL_GRACE, self._connect_timeout) if self._abandoned else None
        await _let_go(self._release, self._conn, bound or self._connect_timeout)
