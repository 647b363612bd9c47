"""``Cursor``: ephemeral per-connection positions (cursors, selections) shared across instances.

Each connection's latest position on a topic is broadcast at most once per ``throttle`` seconds
(leading edge at once, trailing edge with the latest data), optionally coalesced per topic into
``bulk`` frames (``topic_throttle``), stored in a KV map ``cursor:<topic>`` whose fields
(``<instance_id>:<n>``, one per connection) expire ``ttl`` seconds after their last write, and
relayed to other instances over the channel ``cursor:events``.

Guarantee: a local broadcast always happens (bulk frames included; the original dropped local
bulk frames while the breaker was open); a position is relayed to other instances only after
it was stored, and a ``remove`` is published only after the entry was deleted. Positions never
go backwards on another instance: one ordered queue per cursor object stores and relays every
broadcast (:mod:`~uwsx.features.cursor_writer`), and each write carries a version so that a
receiver never shows data older than what it already showed, whether it comes from a relay or
from a storage read (backfill, snapshot) answered late (:mod:`~uwsx.features.cursor_order`). Once a
connection's cursor is removed (or its connection closed), nothing of it is written or relayed
again: pending trailing broadcasts are cancelled, in-flight writes finish before the delete, and
local state is dropped even when the backend is down (the entry then expires within ``ttl``).
A newly attached client gets a snapshot (``bulk``) of every live entry, and after the relay
subscription (re)connects, local clients are backfilled with other instances' live entries.

Invariants (Checked by: ``uwsx_sim`` cursor checker):

* CU-1 no ghost: after ``remove``/close returns, no write or relay of that entry happens.
* CU-2 ordering: another instance sees a connection's positions in order (``update`` and
  ``bulk`` frames, relayed or backfilled) and never one after its ``remove``.
* CU-3 expiry: an entry not refreshed for ``ttl`` is absent from ``list`` and snapshots.

Client topic ``__cursor:<topic>``: ``update {key, user, data}``, ``bulk [{key, user, data}]``,
``remove {key}``. Local frames are published with the platform default (``relay=True``); frames
from other instances and backfills with ``relay=False``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from uwsx import _runtime
from uwsx.connect import require
from uwsx.features._envelope import DEFAULT_MAX_ENVELOPE_BYTES
from uwsx.features._json import dumps
from uwsx.features.cursor_hooks import TOPIC_PREFIX, CursorHooks
from uwsx.features.cursor_order import RemoteVersions
from uwsx.features.cursor_relay import CursorRelay
from uwsx.features.cursor_state import (
    ConnCursor,
    CursorEntry,
    CursorThrottle,
    decode_entries,
    decode_versioned,
)
from uwsx.features.cursor_writer import CursorWriter
from uwsx.features.presence_data import Select, UserData
from uwsx.metrics import NULL_METRICS, MetricsLike
from uwsx.platform import Connection, Platform, resolve
from uwsx.ports.backend import Backend
from uwsx.ports.kv import KV
from uwsx.reliability.breaker import CircuitBreaker, with_breaker

__all__ = ["MAX_CURSOR_CONNECTIONS", "MAX_CURSOR_TOPICS", "Cursor", "CursorHooks"]

log = logging.getLogger("uwsx.cursor")

MAX_CURSOR_CONNECTIONS = 10_000_000
MAX_CURSOR_TOPICS = 10_000_000


def _seconds(value: object, what: str, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


class Cursor:
    """Throttled, shared cursor positions (see the module docstring).

    :param backend: a backend with the ``kv`` and ``pubsub`` ports.
    :param throttle: minimum seconds between broadcasts per connection per topic (>= 0).
    :param topic_throttle: when > 0, broadcasts of one topic are coalesced into at most one
        frame per this many seconds (``bulk`` when several connections moved).
    :param select: picks the public user fields broadcast with each position.
    :param ttl: seconds an entry lives after its last write (> 0).
    :param max_envelope_bytes: largest received envelope accepted.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        throttle: float = 0.05,
        topic_throttle: float = 0.0,
        select: Select | None = None,
        ttl: float = 30.0,
        max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        breaker: CircuitBreaker | None = None,
        metrics: MetricsLike | None = None,
    ) -> None:
        self.throttle = _seconds(throttle, "throttle", allow_zero=True)
        self.topic_throttle = _seconds(topic_throttle, "topic_throttle", allow_zero=True)
        self.ttl = _seconds(ttl, "ttl", allow_zero=False)
        self._user = UserData(select, owner="cursor")
        require(backend, "Cursor", ports=("kv", "pubsub"))
        kv = backend.kv
        assert kv is not None
        self._kv: KV = kv
        self._breaker = breaker
        rt = _runtime.current()
        self._clock = rt.clock
        self.instance_id = rt.ids.hex(8)
        self._tasks = rt.task_group("Cursor")
        self._conns: dict[Connection, ConnCursor] = {}
        self._states: dict[str, ConnCursor] = {}  # the same, by storage field
        self._topics: dict[str, CursorThrottle] = {}
        self._serial = 0
        #: Version of the latest write or remove (never reset: keys can be reused after clear).
        self._version = 0
        #: The platform of the latest update: where frames from other instances go.
        self.platform: Platform | None = None
        self.hooks = CursorHooks(self)
        m = metrics or NULL_METRICS
        self._map_topic = m.map_topic
        self._m_updates = m.counter("cursor_updates_total", "Cursor updates", ("topic",))
        self._m_broadcasts = m.counter(
            "cursor_broadcasts_total", "Cursor frames broadcast", ("topic",)
        )
        self._m_throttled = m.counter(
            "cursor_throttled_total", "Updates deferred by the throttle", ("topic",)
        )
        assert backend.pubsub is not None
        # Records outlive any read or relay still in flight, and the stored entries they guard.
        versions = RemoteVersions(self._clock, max(2 * self.ttl, 10.0))
        self._relay = CursorRelay(self, backend.pubsub, max_envelope_bytes, versions)
        self._writer = CursorWriter(self)

    @staticmethod
    def key(topic: str) -> str:
        """The KV map holding ``topic``'s entries."""
        return "cursor:" + topic

    def active_topics(self) -> list[str]:
        return list(self._topics)

    # -- updating --------------------------------------------------------------------
    def update(self, conn: Connection, topic: str, data: Any, platform: Platform) -> None:
        """Record ``conn``'s latest position on ``topic`` and broadcast it (throttled).
        Synchronous: storage writes and relays run in the background (:meth:`flush` awaits
        them).

        :raises ValueError: empty topic, or a ``__`` topic (other instances refuse those).
        :raises TypeError: ``data`` is not JSON-serialisable.
        :raises RuntimeError: beyond the local connection/topic caps.
        """
        if not isinstance(topic, str) or not topic or topic.startswith("__"):
            raise ValueError(f"cursor: invalid topic {topic!r}")
        try:
            dumps(data)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cursor: data is not JSON-serialisable: {exc}") from exc
        self._m_updates.inc(topic=self._map_topic(topic))
        self.platform = platform
        self._relay.ensure_subscribed()
        state = self._conns.get(conn)
        if state is None:
            if len(self._conns) >= MAX_CURSOR_CONNECTIONS:
                raise RuntimeError(
                    f"cursor: local connection count exceeded {MAX_CURSOR_CONNECTIONS}"
                )
            self._serial += 1
            state = ConnCursor(
                f"{self.instance_id}:{self._serial}", self._user.public(conn.user_data)
            )
            self._conns[conn] = state
            self._states[state.key] = state
        entry = state.topics.get(topic)
        if entry is None:
            tick = self._topics.get(topic)
            if tick is None:
                if len(self._topics) >= MAX_CURSOR_TOPICS:
                    raise RuntimeError(f"cursor: local topic count exceeded {MAX_CURSOR_TOPICS}")
                tick = self._topics[topic] = CursorThrottle()
            entry = state.topics[topic] = CursorEntry(state.key, state.user)
            tick.members += 1
        entry.data = data
        entry.platform = platform
        now = self._clock.monotonic()
        elapsed = now - entry.last
        if elapsed >= self.throttle:
            entry.cancel_trailing()
            entry.last = now
            self._broadcast(topic, entry)
        else:
            self._m_throttled.inc(topic=self._map_topic(topic))
            if entry.trailing is None:
                entry.trailing = self._tasks.spawn(
                    self._trailing(topic, entry, self.throttle - elapsed), name="uwsx-cursor-trail"
                )

    async def _trailing(self, topic: str, entry: CursorEntry, delay: float) -> None:
        if _runtime.buggify("cursor.trailing_late"):
            # A loaded loop fires the trailing edge late (the throttle is only a minimum).
            delay += self.throttle
        await self._clock.sleep(delay)
        entry.trailing = None
        if entry.alive:
            entry.last = self._clock.monotonic()
            self._broadcast(topic, entry)

    def _broadcast(self, topic: str, entry: CursorEntry) -> None:
        if self.topic_throttle <= 0:
            self._send([entry], topic)
            return
        tick = self._topics[topic]
        tick.dirty[entry.key] = entry
        now = self._clock.monotonic()
        if now - tick.last >= self.topic_throttle:
            self._flush_topic(topic)
        elif tick.timer is None:
            tick.timer = self._tasks.spawn(
                self._topic_trailing(topic, tick, self.topic_throttle - (now - tick.last)),
                name="uwsx-cursor-topic",
            )

    async def _topic_trailing(self, topic: str, tick: CursorThrottle, delay: float) -> None:
        await self._clock.sleep(delay)
        tick.timer = None
        if self._topics.get(topic) is tick:
            self._flush_topic(topic)

    def _flush_topic(self, topic: str) -> None:
        tick = self._topics[topic]
        tick.last = self._clock.monotonic()
        entries = [e for e in tick.dirty.values() if e.alive]
        tick.dirty.clear()
        if entries:
            self._send(entries, topic)

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    def _send(self, entries: list[CursorEntry], topic: str) -> None:
        """Publish locally now; store, then relay, in the background (in broadcast order)."""
        self._m_broadcasts.inc(topic=self._map_topic(topic))
        frames = [e.frame() for e in entries]
        platform = entries[-1].platform
        if platform is not None:
            if len(frames) == 1:
                platform.publish(TOPIC_PREFIX + topic, "update", frames[0])
            else:
                platform.publish(TOPIC_PREFIX + topic, "bulk", frames)
        wall, version = self._clock.wall(), self._next_version()
        fields = {e.key: e.stored(wall, version) for e in entries}
        event, payload = ("update", frames[0]) if len(frames) == 1 else ("bulk", frames)
        write = self._writer.submit(topic, fields, event, payload, version)
        for e in entries:
            e.track(write)

    # -- removing --------------------------------------------------------------------
    async def remove(self, conn: Connection, platform: Platform, topic: str | None = None) -> None:
        """Remove ``conn``'s cursor from ``topic`` (every topic when None).

        Local state is dropped in any case; ``remove`` frames go out (here and to other
        instances) only once storage confirmed the delete.
        """
        state = self._conns.get(conn)
        if state is None:
            return
        topics = list(state.topics) if topic is None else [t for t in (topic,) if t in state.topics]
        if not topics:
            return
        entries = {t: self._detach(conn, state, t) for t in topics}
        version = self._next_version()  # newer than every write of these entries
        await asyncio.gather(*(e.settled() for e in entries.values()))
        breaker = self._breaker
        try:
            if breaker is not None:
                breaker.guard()
        except Exception:
            return
        try:
            await asyncio.gather(
                *(self._kv.map_remove(self.key(t), e.key) for t, e in entries.items())
            )
        except Exception as exc:
            if breaker is not None:
                breaker.failure(exc)
            return
        if breaker is not None:
            breaker.success()
        for t, e in entries.items():
            platform.publish(TOPIC_PREFIX + t, "remove", {"key": e.key})
        await self._relay.publish_many(
            [(t, "remove", {"key": e.key}, version) for t, e in entries.items()]
        )

    def _detach(self, conn: Connection, state: ConnCursor, topic: str) -> CursorEntry:
        entry = state.topics.pop(topic)
        entry.kill()
        tick = self._topics.get(topic)
        if tick is not None:
            tick.dirty.pop(entry.key, None)
            tick.members -= 1
            if tick.members <= 0:
                tick.cancel()
                del self._topics[topic]
        if not state.topics:
            del self._conns[conn]
            self._states.pop(state.key, None)
        return entry

    # -- reading ---------------------------------------------------------------------
    async def list(self, topic: str) -> list[dict[str, Any]]:
        """Every live entry of ``topic`` on every instance: ``[{key, user, data}]``."""
        items = await with_breaker(self._breaker, lambda: self._kv.map_items(self.key(topic)))
        return decode_entries(items)

    async def snapshot(self, conn: Connection, topic: str, platform: Platform) -> None:
        """Send ``conn`` a ``bulk`` frame of the live entries (nothing when there are none).

        The read may be answered after newer positions were shown: another instance's entry
        older than what was relayed meanwhile (or removed since) is left out, and this
        instance's own entries are sent as they are now (left out once removed)."""
        items = await with_breaker(self._breaker, lambda: self._kv.map_items(self.key(topic)))
        versions, own = self._relay.versions, self.instance_id + ":"
        entries = []
        for frame, v in decode_versioned(items):
            key = frame["key"]
            if not key.startswith(own):
                if versions.read(topic, key, v, shown=False):
                    entries.append(frame)
                continue
            state = self._states.get(key)
            local = None if state is None else state.topics.get(topic)
            if local is not None:
                entries.append(local.frame())
        if entries:
            platform.send(conn, TOPIC_PREFIX + topic, "bulk", entries)

    async def attach(self, conn: Connection, topic: str, platform: Platform) -> None:
        """Subscribe ``conn`` to ``__cursor:<topic>`` (server-trust path) and snapshot it."""
        try:
            denied = await resolve(platform.subscribe(conn, TOPIC_PREFIX + topic))
        except Exception:
            return
        if denied is None:
            await self.snapshot(conn, topic, platform)

    async def detach(self, conn: Connection, topic: str, platform: Platform) -> None:
        try:
            platform.unsubscribe(conn, TOPIC_PREFIX + topic)
        except Exception:
            return

    async def flush(self) -> None:
        """Wait until every write and relay started so far has finished, and the relay
        subscription attempt in progress (with its backfill), if any."""
        await self._relay.settled()
        await self._writer.drained()

    # -- lifecycle -------------------------------------------------------------------
    async def clear(self) -> None:
        """Delete every cursor entry in storage, then all local state and timers.

        :raises CircuitBrokenError: the breaker is open (nothing changed).
        """
        await with_breaker(self._breaker, lambda: self._kv.delete_prefix("cursor:"))
        for state in self._conns.values():
            for entry in state.topics.values():
                entry.kill()
        for tick in self._topics.values():
            tick.cancel()
        self._conns.clear()
        self._states.clear()
        self._topics.clear()
        self._serial = 0

    async def close(self) -> None:
        """Cancel timers and writes, close the relay subscription. Idempotent, never raises."""
        for state in self._conns.values():
            for entry in state.topics.values():
                entry.alive = False
        await self._tasks.aclose()
        await self._relay.close()

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
