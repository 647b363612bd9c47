"""Pub/sub listeners: one dedicated connection per (kind, node), kept alive and resubscribed.

A :class:`Listener` owns one connection to one server carrying channels of one kind
(``subscribe`` or ``ssubscribe``). A supervisor task connects, subscribes every wanted channel,
PINGs when idle and treats a silent connection (no byte for ``health_interval +
socket_timeout``) as lost. After a loss it reconnects with jittered backoff, subscribes again
and, once the server confirmed the channels, reports the window during which messages may have
been missed to its :class:`Hub` (the pub/sub port), which tells the subscriptions. Nothing is
ever lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from redis.exceptions import MovedError, ResponseError

from uwsx import _runtime
from uwsx.errors import Unavailable
from uwsx_redis._driver import DriverOptions, Node

__all__ = ["Hub", "Listener", "Moved"]

log = logging.getLogger("uwsx.redis.pubsub")

_CHUNK = 200


class Moved(Exception):
    """The node refused a sharded subscription (MOVED): the slot map is stale."""


class Hub(Protocol):
    """What a listener reports to."""

    def deliver(self, listener: Listener, channel: bytes, data: bytes) -> None: ...

    def recovered(self, listener: Listener, channels: dict[bytes, float]) -> None:
        """``channels`` (wire name -> wall time they were lost) are subscribed again."""
        ...

    def dropped(self, listener: Listener, channels: list[bytes], since: float) -> None:
        """The server dropped ``channels`` here (slot moved); the hub must re-route them."""
        ...

    def unreachable(self, listener: Listener, since: float) -> None:
        """The listener's node has refused connections for a while (a failover may have
        replaced it); the hub may move what the listener carries."""
        ...

    def health_changed(self, listener: Listener) -> None: ...


class Listener:
    """One pub/sub connection (see the module docstring)."""

    def __init__(
        self,
        hub: Hub,
        node: Node,
        kind: str,
        options: DriverOptions,
        *,
        role: str | None = None,
        locate: Callable[[], Awaitable[Node]] | None = None,
    ) -> None:
        self.hub = hub
        self.node = node
        self.kind = kind  # "subscribe" or "ssubscribe"
        #: what the hub does with the messages ("channels", "sharded", "expired")
        self.role = role or kind
        #: picks the node again before each reconnect (the cluster's default node may move)
        self._locate = locate
        self.options = options
        self.channels: set[bytes] = set()
        self.healthy = False
        self.closed = False
        self._conn: Any = None
        self._write_lock = asyncio.Lock()
        self._confirmed: set[bytes] = set()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._inflight: deque[set[bytes]] = deque()
        self._lost: dict[bytes, float] = {}
        self._recovered: dict[bytes, float] = {}
        self._last_rx = 0.0
        self._tasks = _runtime.current().task_group(f"uwsx-redis-{kind}-{node.name}")
        self._tasks.spawn(self._supervise(), name=f"uwsx-redis-listener-{node.name}")

    # -- subscriptions -----------------------------------------------------------------
    async def add(self, channels: Iterable[bytes], *, lost_since: float | None = None) -> None:
        """Subscribe ``channels``; returns once the server confirmed each of them."""
        wanted = [c for c in channels if c not in self._confirmed]
        if not wanted:
            return
        new = [c for c in wanted if c not in self.channels]
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        for channel in wanted:
            self.channels.add(channel)
            if lost_since is not None:
                self._lost[channel] = lost_since
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(channel, []).append(fut)
            waits.append(fut)
        if new and self._conn is not None and self.healthy:
            with contextlib.suppress(Exception):
                await self._subscribe(new)
        done, _ = await asyncio.wait(waits, timeout=self.options.command_timeout)
        for fut in waits:
            if not fut.done():
                fut.cancel()
        if len(done) < len(waits):
            for channel in new:
                self._waiters.pop(channel, None)
            await self.remove(new)
            raise Unavailable(
                f"the server did not confirm the {self.kind} within "
                f"{self.options.command_timeout:g} s"
            )
        if any(f.cancelled() for f in done):
            raise Unavailable("the pub/sub connection was closed")
        if any(f.exception() is not None for f in done):
            raise Moved()

    async def remove(self, channels: Iterable[bytes]) -> None:
        gone = [c for c in channels if c in self.channels]
        for channel in gone:
            self.channels.discard(channel)
            self._confirmed.discard(channel)
            self._lost.pop(channel, None)
        if gone and self._conn is not None and self.healthy:
            with contextlib.suppress(Exception):
                await self._send(
                    [("UNSUBSCRIBE" if self.kind == "subscribe" else "SUNSUBSCRIBE", *gone)]
                )

    async def close(self) -> None:
        self.closed = True
        self.healthy = False
        await self._tasks.aclose()
        await self._drop_connection()
        for waits in self._waiters.values():
            for fut in waits:
                fut.cancel()
        self._waiters.clear()

    # -- wire --------------------------------------------------------------------------
    async def _send(self, commands: list[tuple[Any, ...]]) -> None:
        conn = self._conn
        if conn is None:
            raise ConnectionError("not connected")
        async with self._write_lock:
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)

    async def _subscribe(self, channels: list[bytes]) -> None:
        verb = "SUBSCRIBE" if self.kind == "subscribe" else "SSUBSCRIBE"
        # SSUBSCRIBE takes channels of one slot only: one command per channel keeps it simple.
        size = _CHUNK if self.kind == "subscribe" else 1
        commands = []
        for i in range(0, len(channels), size):
            group = channels[i : i + size]
            self._inflight.append(set(group))
            commands.append((verb, *group))
        await self._send(commands)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    # -- supervision -------------------------------------------------------------------
    async def _supervise(self) -> None:
        rt = _runtime.current()
        failures = 0
        down_since: float | None = None
        while not self.closed:
            try:
                await self._open()
            except Exception as exc:
                failures += 1
                if down_since is None:
                    down_since = rt.clock.wall()
                log.debug("pub/sub connect to %s failed: %s", self.node.name, exc)
                if failures == 3 and self.role == "sharded" and self.channels:
                    # the node may be gone for good (failover): let the hub re-route
                    orphans = sorted(self.channels)
                    self.channels.clear()
                    self.hub.dropped(self, orphans, down_since)
                elif failures % 3 == 0 and self.role == "expired":
                    self.hub.unreachable(self, down_since)
                await self._backoff(failures)
                continue
            failures = 0
            if down_since is not None:
                for channel in self.channels:
                    self._lost.setdefault(channel, down_since)
                down_since = None
            await self._watch()
            if not self.closed:
                down_since = rt.clock.wall()
                self._set_health(False)
                log.warning(
                    "pub/sub connection to %s lost; reconnecting (messages may be missed)",
                    self.node.name,
                )

    async def _backoff(self, failures: int) -> None:
        rt = _runtime.current()
        delay = min(2.0, 0.05 * (2 ** min(failures, 6))) * (0.5 + rt.random.random())
        await rt.clock.sleep(delay)

    async def _open(self) -> None:
        if self._locate is not None:
            self.node = await self._locate()
        conn: Any = self.node.dedicated()
        await conn.connect()
        self._conn = conn
        self._confirmed.clear()
        self._inflight.clear()
        self._last_rx = asyncio.get_running_loop().time()
        channels = sorted(self.channels)
        try:
            if channels:
                await self._subscribe(channels)
            # Channels added while that was being sent were not in the snapshot; from the
            # moment the listener is healthy, add() sends its own SUBSCRIBE.
            late = sorted(self.channels.difference(channels))
            self._set_health(True)
            if late:
                await self._subscribe(late)
        except BaseException:
            self._set_health(False)
            await self._drop_connection()
            raise

    async def _watch(self) -> None:
        """Read until the connection fails or goes silent; PING while idle."""
        loop = asyncio.get_running_loop()
        reader = self._tasks.spawn(self._read(), name=f"uwsx-redis-reader-{self.node.name}")
        interval = self.options.health_interval
        try:
            while not reader.done():
                await asyncio.wait({reader}, timeout=interval)
                if reader.done():
                    break
                idle = loop.time() - self._last_rx
                if idle > interval + self.options.socket_timeout:
                    log.warning("pub/sub connection to %s went silent", self.node.name)
                    break
                if idle >= interval:
                    with contextlib.suppress(Exception):
                        await self._send([("PING",)])
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            await self._drop_connection()

    async def _read(self) -> None:
        conn = self._conn
        loop = asyncio.get_running_loop()
        while True:
            try:
                reply = await conn.read_response(disable_decoding=True, timeout=math.inf)
            except ResponseError as exc:
                self._last_rx = loop.time()
                self._on_error(exc)
                continue
            except Exception as exc:
                log.debug("pub/sub read from %s failed: %s", self.node.name, exc)
                return
            self._last_rx = loop.time()
            if isinstance(reply, list) and reply:
                self._on_reply(reply)

    def _on_reply(self, reply: list[Any]) -> None:
        kind = bytes(reply[0]).lower()
        if kind in (b"message", b"smessage") and len(reply) >= 3:
            try:
                self.hub.deliver(self, bytes(reply[1]), bytes(reply[2]))
            except Exception:
                log.exception("pub/sub delivery failed")
        elif kind in (b"subscribe", b"ssubscribe"):
            self._on_confirmed(bytes(reply[1]))
        elif kind == b"sunsubscribe" and bytes(reply[1]) in self.channels:
            # Unrequested: the channel's slot moved to another node.
            channel = bytes(reply[1])
            self.channels.discard(channel)
            self._confirmed.discard(channel)
            self.hub.dropped(self, [channel], _runtime.current().clock.wall())

    def _on_confirmed(self, channel: bytes) -> None:
        if self._inflight:
            self._inflight[0].discard(channel)
            if not self._inflight[0]:
                self._inflight.popleft()
        if channel not in self.channels:
            return
        self._confirmed.add(channel)
        for fut in self._waiters.pop(channel, []):
            if not fut.done():
                fut.set_result(None)
        since = self._lost.pop(channel, None)
        if since is not None:
            self._recovered[channel] = since
        if not self._inflight and self._recovered:
            recovered, self._recovered = self._recovered, {}
            self.hub.recovered(self, recovered)

    def _on_error(self, exc: ResponseError) -> None:
        failed = self._inflight.popleft() if self._inflight else set()
        if isinstance(exc, MovedError) and failed:
            orphans = []
            for channel in failed:
                if channel not in self.channels:
                    continue
                self.channels.discard(channel)
                waiters = self._waiters.pop(channel, [])
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(Moved())
                if not waiters:
                    orphans.append(channel)
            if orphans:
                # lost on a resubscribe: nobody waits, the hub re-routes them
                self.hub.dropped(
                    self, orphans, self._lost.get(orphans[0]) or _runtime.current().clock.wall()
                )
            return
        log.error("pub/sub error from %s: %s (channels %r)", self.node.name, exc, sorted(failed))

    def _set_health(self, healthy: bool) -> None:
        if self.healthy != healthy:
            self.healthy = healthy
            self.hub.health_changed(self)
