"""Where commands are sent: one server and the connections the executor uses on it.

A :class:`Node` hands out connected connections for one round trip at a time. Before a pooled
connection is reused it is checked for what would make a write on it fail or be lost: a
server that closed or reset it (seen by the kernel even before the event loop has processed
it) or bytes nobody asked for; such a connection is reconnected first, so that a restarted
server makes the next command *not sent* (retried, or ``Unavailable``) rather than
indeterminate.
"""

from __future__ import annotations

import asyncio
import select
from collections import deque
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError

__all__ = ["ClusterNodeRef", "Node", "PoolNode", "dropping", "no_retry", "stale"]

_C = TypeVar("_C", bound=AbstractConnection)


class _DropOnClose:
    """Makes closing a connection drop it: the transport is aborted, with no goodbye.

    redis-py closes gracefully, and on a TLS connection that means sending ``close_notify``
    and keeping the socket open until the server answers: for up to 30 s when the server is
    frozen (its ``disconnect()`` then times out), and for ever when the event loop stops
    first, or the closing task is cancelled, before the answer arrives (the socket is then
    leaked). The adapter has nothing left to send on a connection it closes (it never queues
    a write it does not wait for), so dropping loses nothing.
    """

    async def disconnect(self, nowait: bool = False, **kwargs: Any) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.transport.abort()
        await super().disconnect(nowait=nowait, **kwargs)  # type: ignore[misc]


_DROPPING: dict[type[Any], type[Any]] = {}


def dropping(cls: type[_C]) -> type[_C]:
    """``cls`` with :class:`_DropOnClose` (made once per class; a class made here
    maps to itself)."""
    sub = _DROPPING.get(cls)
    if sub is None:
        sub = _DROPPING[cls] = type(cls.__name__, (_DropOnClose, cls), {})
        _DROPPING[sub] = sub
    return cast("type[_C]", sub)


def no_retry(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    out["retry"] = Retry(NoBackoff(), 0)
    return out


def stale(conn: Any) -> bool:
    """True when a connected connection's socket was closed or reset by the server (what
    redis-py's own check misses after a reset): sending on it could only fail."""
    reader, writer = getattr(conn, "_reader", None), getattr(conn, "_writer", None)
    if reader is None or writer is None:
        return False
    try:
        return bool(writer.is_closing() or reader.at_eof() or reader.exception() is not None)
    except Exception:
        return True


def _readable(conn: Any) -> bool:
    """True when an idle connection's socket has something to read: the server closed or
    reset it, or sent bytes nobody asked for. Asks the kernel, which knows of a closed peer
    before the event loop has processed it (a write would then be lost, not refused)."""
    sock = conn._writer.transport.get_extra_info("socket")
    if sock is None:
        return False
    fd = sock.fileno()
    if fd < 0:
        return True
    if hasattr(select, "poll"):  # no FD_SETSIZE limit (a server holds thousands of sockets)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


class Node:
    """One server commands are sent to, with its pool of command connections."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    async def acquire(self) -> AbstractConnection:
        """A connected connection; raises before anything is sent if none can be had."""
        raise NotImplementedError

    async def release(self, conn: AbstractConnection) -> None:
        raise NotImplementedError

    def dedicated(self) -> AbstractConnection:
        """A new connection outside the pool (pub/sub), not yet connected."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class PoolNode(Node):
    """A standalone server. The connections it took from the pool stay with it (idle ones
    are reused last-in first-out, checked before each use) instead of going through the
    pool's lock, condition and bookkeeping on every round trip; at most the pool's
    ``max_connections`` are ever taken, and a caller beyond that waits for a release."""

    __slots__ = ("_idle", "_owned", "_waiters", "pool")

    def __init__(self, name: str, pool: ConnectionPool) -> None:
        super().__init__(name)
        self.pool = pool
        self._idle: list[AbstractConnection] = []
        self._owned = 0
        self._waiters: deque[asyncio.Future[AbstractConnection]] = deque()

    async def acquire(self) -> AbstractConnection:
        if self._idle:
            conn: Any = self._idle.pop()
        elif self._owned < self.pool.max_connections:
            self._owned += 1
            try:
                # get_connection connects (and replaces a connection the server closed).
                conn = await cast(Any, self.pool).get_connection()
            except BaseException:
                self._owned -= 1
                raise
        else:
            conn = await self._wait()
        try:
            await _ready(conn)
        except BaseException:
            self._put(conn)
            raise
        connected: AbstractConnection = conn
        return connected

    async def _wait(self) -> AbstractConnection:
        fut: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(getattr(self.pool, "timeout", None)):
                return await fut
        except BaseException as exc:
            # A connection handed over as the wait ended (timeout or cancellation) must go
            # to the next waiter or back to the idle list, not be dropped.
            if fut.done() and not fut.cancelled():
                self._put(fut.result())
            if isinstance(exc, TimeoutError):
                raise ConnectionError("No connection available.") from None
            raise

    def _put(self, conn: AbstractConnection) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        self._idle.append(conn)

    async def release(self, conn: AbstractConnection) -> None:
        self._put(conn)

    def dedicated(self) -> AbstractConnection:
        conn: AbstractConnection = self.pool.connection_class(
            **no_retry(self.pool.connection_kwargs)
        )
        return conn


async def _ready(conn: Any) -> None:
    """Make a connection fit to send on: a pooled connection whose server went away (EOF, a
    reset) or that holds unread bytes is replaced before anything is written, so that a
    restart does not turn the next command indeterminate."""
    if conn.is_connected:
        try:
            dead = stale(conn) or _readable(conn) or await conn.can_read()
        except Exception:
            dead = True
        if not dead:
            return
        await conn.disconnect()
    await conn.connect()


class ClusterNodeRef(Node):
    __slots__ = ("node",)

    def __init__(self, node: ClusterNode) -> None:
        super().__init__(node.name)
        self.node = node

    async def acquire(self) -> AbstractConnection:
        node = self.node
        conn: Any = node.acquire_connection()
        try:
            await node.disconnect_if_needed(conn)
            await _ready(conn)
        except BaseException:
            node.release(conn)
            raise
        connected: AbstractConnection = conn
        return connected

    async def release(self, conn: AbstractConnection) -> None:
        self.node.release(conn)  # type: ignore[arg-type]

    def dedicated(self) -> AbstractConnection:
        kwargs = no_retry(self.node.connection_kwargs)
        conn: AbstractConnection = self.node.connection_class(**kwargs)
        return conn
