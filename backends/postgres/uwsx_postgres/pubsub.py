"""``PostgresPubSub``: channels over LISTEN/NOTIFY on one dedicated connection per backend.

**Channel names.** ``key_prefix + channel`` is used verbatim as the Postgres channel when it is
a plain identifier of at most 63 bytes (so ``pg_notify('orders', ...)`` from a trigger reaches
a subscriber of ``orders``); anything else maps to ``uwsx#`` + 40 hex digits of its SHA-256,
which no plain name can equal. ``pg_notify`` takes the name as a parameter and ``LISTEN`` gets
it double-quoted, so no channel text is ever spliced into SQL. Handlers receive the names they
subscribed with.

**Size.** A NOTIFY payload must be under 8000 bytes: larger messages (and NUL characters, which
Postgres text cannot hold) raise ``ValueError`` before anything is sent.

**Loss.** When the LISTEN connection ends (server restart, ``pg_terminate_backend``, network)
or its health ping fails, every subscription turns unhealthy; a background task reconnects with
capped, jittered backoff, LISTENs every channel again and then calls each subscription's
``on_loss`` with the wall-clock window in which messages may have been missed.

**Health ping.** Every ``ping_interval`` seconds the LISTEN connection runs ``SELECT 1``, and a
ping not answered within ``ping_interval`` seconds counts as a lost connection, whatever
``command_timeout`` is (it may be None): a half-open connection (peer unreachable, no TCP
reset) delivers nothing and reports no error, so only an unanswered ping reveals it, at most
twice ``ping_interval`` after it went silent (psycopg then spends up to a few seconds on its
own cancel attempt before the ping ends). The ping's own bound is ``ping_interval`` rather
than ``connect_timeout`` because it sets how soon a silent loss is noticed, which is what
``ping_interval`` is for. Since such a connection may have stopped delivering long before the
ping gave up, a loss window starts at the last moment the connection was known to deliver:
when the last answered ping was sent (notifications committed before it are received before
its answer), or when the connection was opened.

Postgres delivers one NOTIFY per distinct ``(channel, payload)`` within a transaction, so
``publish_many`` starts a new statement before repeating a pair it already sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import deque
from collections.abc import Iterable, Sequence
from functools import partial

from uwsx import _runtime
from uwsx.errors import BackendError, Unavailable, UnsupportedBackendError
from uwsx.ports.checks import check_key, check_value
from uwsx.ports.pubsub import ExpiryHandler, LossHandler, LossWindow, MessageHandler
from uwsx_postgres._checks import check_no_nul
from uwsx_postgres._driver import Dedicated, Driver

__all__ = ["MAX_NOTIFY_BYTES", "PostgresPubSub", "PostgresSubscription", "wire_channel"]

log = logging.getLogger("uwsx.postgres")

#: Largest NOTIFY payload in bytes (the server requires fewer than 8000).
MAX_NOTIFY_BYTES = 7999

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PUBLISH = "SELECT pg_notify($1::text, $2::text)"
_PUBLISH_MANY = (
    "SELECT count(pg_notify(x.c, x.m))::int FROM "
    "(SELECT c, m FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(c, m, i) ORDER BY i) x"
)


def wire_channel(full: str) -> str:
    """The Postgres channel carrying the (prefixed) uwsx channel ``full``."""
    if _PLAIN.fullmatch(full) and len(full) <= 63:
        return full
    return "uwsx#" + hashlib.sha256(full.encode()).hexdigest()[:40]


def _sharded(sharded: bool) -> None:
    if sharded:
        raise UnsupportedBackendError(
            "the postgres backend has no sharded channels (capability sharded_pubsub is missing)"
        )


class PostgresSubscription:
    """Channels delivered to one handler, in order, one message at a time."""

    def __init__(
        self, pubsub: PostgresPubSub, handler: MessageHandler, on_loss: LossHandler | None
    ) -> None:
        self._pubsub = pubsub
        self._handler = handler
        self._on_loss = on_loss
        self._wires: dict[str, str] = {}  # channel -> wire
        self._by_wire: dict[str, set[str]] = {}
        self._queue: deque[tuple[str, str]] = deque()
        self._scheduled = False
        self._closed = False
        self._loop = asyncio.get_running_loop()

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._wires)

    @property
    def healthy(self) -> bool:
        return not self._closed and self._pubsub.healthy

    def deliver(self, wire: str, message: str) -> None:
        if self._closed:
            return
        for channel in sorted(self._by_wire.get(wire, ())):
            self._queue.append((channel, message))
        if self._queue and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        while self._queue and not self._closed:
            channel, message = self._queue.popleft()
            try:
                self._handler(channel, message)
            except Exception:
                log.exception("pub/sub handler failed on channel %r", channel)

    def report_loss(self, window: LossWindow) -> None:
        if self._closed or self._on_loss is None:
            return
        try:
            self._on_loss(window)
        except Exception:
            log.exception("pub/sub on_loss handler failed")

    async def add(self, channels: Iterable[str]) -> None:
        if self._closed:
            raise BackendError("subscription is closed")
        wanted = {c: self._pubsub.wire(c) for c in (check_key(c, "channel") for c in channels)}
        new = {c: w for c, w in wanted.items() if c not in self._wires}
        if not new:
            return
        # Registered before LISTEN: a message published as soon as the server has the LISTEN
        # may be delivered while the command is still completing.
        for channel, wire in new.items():
            self._wires[channel] = wire
            self._by_wire.setdefault(wire, set()).add(channel)
        try:
            await self._pubsub.attach(self, sorted(set(new.values())))
        except BaseException:
            self._forget_channels(list(new))
            raise

    def _forget_channels(self, channels: list[str]) -> list[str]:
        """Drop ``channels``; returns the wires no channel of this subscription uses any more."""
        dropped = []
        for channel in channels:
            wire = self._wires.pop(channel, None)
            if wire is None:
                continue
            names = self._by_wire[wire]
            names.discard(channel)
            if not names:
                del self._by_wire[wire]
                dropped.append(wire)
        return dropped

    async def remove(self, channels: Iterable[str]) -> None:
        dropped = self._forget_channels([c for c in dict.fromkeys(channels) if c in self._wires])
        if dropped:
            await self._pubsub.detach(self, dropped)

    def end(self) -> None:
        """Stop delivering (the backend is closing its LISTEN connection)."""
        self._closed = True
        self._queue.clear()

    async def close(self) -> None:
        if self._closed:
            return
        await self.remove(list(self._wires))
        self._closed = True
        self._queue.clear()
        self._pubsub.forget(self)


class PostgresPubSub:
    """The PubSub port; ``prefix`` namespaces channels."""

    def __init__(self, driver: Driver, prefix: str, *, ping_interval: float) -> None:
        self._driver = driver
        self._prefix = prefix
        self._ping_interval = ping_interval
        self._conn: Dedicated | None = None
        self._refs: dict[str, set[PostgresSubscription]] = {}
        self._subs: set[PostgresSubscription] = set()
        self._lock = asyncio.Lock()
        self._tasks = _runtime.current().task_group("uwsx-postgres-pubsub")
        self._reconnecting = False
        self._lost_at = 0.0
        #: Wall time from which the current LISTEN connection is not known to have delivered.
        self._confirmed_at = 0.0
        self._closed = False

    @property
    def max_message_bytes(self) -> int:
        return MAX_NOTIFY_BYTES

    @property
    def healthy(self) -> bool:
        return not self._reconnecting and not self._closed

    def wire(self, channel: str) -> str:
        return wire_channel(self._prefix + channel)

    def _message(self, message: str) -> str:
        check_value(message, "message")
        check_no_nul(message, "message")
        size = len(message.encode())
        if size > MAX_NOTIFY_BYTES:
            raise ValueError(
                f"message is {size} bytes; PostgreSQL NOTIFY carries at most {MAX_NOTIFY_BYTES}"
            )
        return message

    # -- publishing ------------------------------------------------------------------
    async def publish(self, channel: str, message: str, *, sharded: bool = False) -> None:
        _sharded(sharded)
        wire = self.wire(check_key(channel, "channel"))
        await self._driver.fetch(_PUBLISH, [wire, self._message(message)])

    async def publish_many(
        self, messages: Sequence[tuple[str, str]], *, sharded: bool = False
    ) -> None:
        _sharded(sharded)
        pairs = [(self.wire(check_key(c, "channel")), self._message(m)) for c, m in messages]
        chunk: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for pair in [*pairs, None]:
            if pair is None or pair in seen:
                if chunk:
                    await self._driver.fetch(
                        _PUBLISH_MANY, [[c for c, _ in chunk], [m for _, m in chunk]]
                    )
                chunk, seen = [], set()
            if pair is not None:
                chunk.append(pair)
                seen.add(pair)

    # -- subscribing -----------------------------------------------------------------
    async def subscribe(
        self,
        channels: Iterable[str],
        handler: MessageHandler,
        *,
        sharded: bool = False,
        on_loss: LossHandler | None = None,
    ) -> PostgresSubscription:
        _sharded(sharded)
        if not callable(handler):
            raise TypeError("handler must be callable")
        wanted = [check_key(c, "channel") for c in channels]
        sub = PostgresSubscription(self, handler, on_loss)
        self._subs.add(sub)
        try:
            await sub.add(wanted)
        except BaseException:
            self._subs.discard(sub)
            raise
        return sub

    async def subscribe_expired(
        self, prefix: str, handler: ExpiryHandler, *, on_loss: LossHandler | None = None
    ) -> PostgresSubscription:
        raise UnsupportedBackendError(
            "the postgres backend has no key-expiry events (capability key_expiry_events is "
            "missing): expired rows are ignored and swept, nothing observes their expiry"
        )

    def forget(self, sub: PostgresSubscription) -> None:
        self._subs.discard(sub)

    async def attach(self, sub: PostgresSubscription, wires: list[str]) -> None:
        async with self._lock:
            if self._closed:
                raise BackendError("the postgres backend is closed")
            if self._reconnecting:
                raise Unavailable("the LISTEN connection is down; reconnecting")
            conn = await self._connect()
            new = [w for w in wires if not self._refs.get(w)]
            for wire in wires:
                self._refs.setdefault(wire, set()).add(sub)
            try:
                await conn.listen(new)
            except BaseException:
                for wire in wires:
                    subs = self._refs.get(wire)
                    if subs is not None:
                        subs.discard(sub)
                        if not subs:
                            del self._refs[wire]
                raise

    async def detach(self, sub: PostgresSubscription, wires: list[str]) -> None:
        async with self._lock:
            unused = []
            for wire in wires:
                subs = self._refs.get(wire)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._refs[wire]
                        unused.append(wire)
            conn = self._conn
            if unused and conn is not None and conn.alive and not self._reconnecting:
                try:
                    await conn.unlisten(unused)
                except BackendError as exc:
                    # The connection is going away; nothing will be listened after reconnect.
                    log.debug("UNLISTEN failed: %s", exc)

    # -- the LISTEN connection ---------------------------------------------------------
    async def _connect(self) -> Dedicated:
        conn = self._conn
        if conn is not None and conn.alive:
            return conn
        opened_at = _runtime.current().clock.wall()
        conn = await self._driver.dedicated()
        self._confirmed_at = opened_at
        conn.on_notify(self._notified)
        conn.on_lost(partial(self._lost_with, conn))
        self._conn = conn
        self._tasks.spawn(self._ping(conn), name="uwsx-postgres-listen-ping")
        return conn

    def _notified(self, wire: str, payload: str) -> None:
        for sub in list(self._refs.get(wire, ())):
            sub.deliver(wire, payload)

    def _lost_with(self, conn: Dedicated, _exc: BaseException | None) -> None:
        self._lost(conn)

    def _lost(self, conn: Dedicated) -> None:
        if conn is not self._conn or self._reconnecting or self._closed:
            return
        self._reconnecting = True
        # Not the time the loss was noticed: a silent connection may have dropped messages
        # since its last answered ping.
        self._lost_at = self._confirmed_at
        log.warning("uwsx postgres: LISTEN connection lost; reconnecting")
        self._tasks.spawn(self._reconnect(), name="uwsx-postgres-listen-reconnect")

    async def _ping(self, conn: Dedicated) -> None:
        clock = _runtime.current().clock
        while conn.alive and conn is self._conn:
            await clock.sleep(self._ping_interval)
            if not conn.alive or conn is not self._conn:
                break
            sent = clock.wall()
            try:
                # Bounded here, not only by command_timeout (which may be None): a half-open
                # connection never answers and never fails.
                async with asyncio.timeout(self._ping_interval):
                    await conn.fetch("SELECT 1")
            except (BackendError, TimeoutError) as exc:
                log.debug("uwsx postgres: LISTEN health ping failed: %r", exc)
                # Unhealthy at once; the reconnect task also closes ``conn`` (idempotent).
                self._lost(conn)
                await conn.close()
                return
            if conn is self._conn:
                self._confirmed_at = sent

    async def _reconnect(self) -> None:
        rt = _runtime.current()
        delay = 0.05
        while not self._closed:
            try:
                async with self._lock:
                    old, self._conn = self._conn, None
                    if old is not None:
                        await old.close()
                    conn = await self._connect()
                    await conn.listen(sorted(self._refs))
            except BackendError as exc:
                log.debug("uwsx postgres: LISTEN reconnect failed: %s", exc)
                await rt.clock.sleep(delay * rt.random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)
                continue
            window = LossWindow(self._lost_at, rt.clock.wall())
            self._reconnecting = False
            for sub in list(self._subs):
                sub.report_loss(window)
            return

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._subs):
            sub.end()
        self._subs.clear()
        self._refs.clear()
        await self._tasks.aclose()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
