"""``Cursor``: ephemeral per-connection positions (cursors, selections) shared across instances.

Each connection's latest position on a topic is broadcast at most once per ``throttle`` seconds
(leading edge at once, trailing edge with the latest data), optionally coalesced per topic into
``bulk`` frames (``topic_throttle``), stored in a KV map ``cursor:<topic>`` whose fields
(``<instance_id>:<n>``, one per connection) expire ``ttl`` seconds after their last write, and
relayed to other instances over the channel ``cursor:events``.

Guarantee: a local broadcast always happens (bulk frames included; the original dropped local
bulk frames while the breaker was open); a position is relayed to other instances only after
it was stored, and a ``remove`` is published only after the entry was deleted. Once a
connection's cursor is removed (or its connection closed), nothing of it is written or relayed
again: pending trailing broadcasts are cancelled, in-flight writes finish before the delete, and
local state is dropped even when the backend is down (the entry then expires within ``ttl``).
A newly attached client gets a snapshot (``bulk``) of every live entry, and after the relay
subscription (re)connects, local clients are backfilled with other instances' live entries.

Invariants (Checked by: ``uwsx_sim`` cursor checker):

* CU-1 no ghost: after ``remove``/close returns, no write or relay of that entry happens.
* CU-2 ordering: another instance sees a connection's ``update`` frames in order and never an
  ``update`` after its ``remove``.
* CU-3 expiry: an entry not refreshed for ``ttl`` is absent from ``list`` and snapshots.

Client topic ``__cursor:<topic>``: ``update {key, user, data}``, ``bulk [{key, user, data}]``,
``remove {key}``. Local frames are published with the platform default (``relay=True``); frames
from other instances and backfills with ``relay=False``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any

from uwsx import _runtime
from uwsx.connect import require
from uwsx.features._envelope import DEFAULT_MAX_ENVELOPE_BYTES
from uwsx.features._json import dumps
from uwsx.features.cursor_relay import CursorRelay
from uwsx.features.cursor_state import ConnCursor, CursorEntry, CursorThrottle, decode_entries
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
TOPIC_PREFIX = "__cursor:"


def _seconds(value: object, what: str, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


class CursorHooks:
    """Server hooks (usable when taken off the object)."""

    def __init__(self, cursor: Cursor) -> None:
        self._cursor = cursor

    async def subscribe(self, conn: Connection, topic: str, *, platform: Platform) -> None:
        """A subscription to ``__cursor:<topic>`` gets a snapshot."""
        if isinstance(topic, str) and topic.startswith(TOPIC_PREFIX) and len(topic) > 9:
            await self._cursor.snapshot(conn, topic[len(TOPIC_PREFIX) :], platform)

    def message(self, conn: Connection, data: Any, *, platform: Platform) -> None:
        """Apply ``{"type": "cursor", "topic": ..., "data": ...}`` client messages; anything
        else (or an invalid topic) is ignored."""
        if not isinstance(data, Mapping) or data.get("type") != "cursor" or "data" not in data:
            return
        topic = data.get("topic")
        if not isinstance(topic, str) or not topic or topic.startswith("__"):
            return
        try:
            self._cursor.update(conn, topic, data["data"], platform)
        except (TypeError, ValueError) as exc:
            log.debug("cursor: ignored client update: %s", exc)

    async def close(self, conn: Connection, *, platform: Platform) -> None:
        await self._cursor.remove(conn, platform)


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
        self._topics: dict[str, CursorThrottle] = {}
        self._serial = 0
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
        self._relay = CursorRelay(self, backend.pubsub, max_envelope_bytes)

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

    def _send(self, entries: list[CursorEntry], topic: str) -> None:
        """Publish locally now; store, then relay, in the background."""
        self._m_broadcasts.inc(topic=self._map_topic(topic))
        frames = [e.frame() for e in entries]
        platform = entries[-1].platform
        if platform is not None:
            if len(frames) == 1:
                platform.publish(TOPIC_PREFIX + topic, "update", frames[0])
            else:
                platform.publish(TOPIC_PREFIX + topic, "bulk", frames)
        wall = self._clock.wall()
        fields = {e.key: e.stored(wall) for e in entries}
        event, payload = ("update", frames[0]) if len(frames) == 1 else ("bulk", frames)
        task = self._tasks.spawn(
            self._store_and_relay(topic, entries, fields, event, payload), name="uwsx-cursor-write"
        )
        for e in entries:
            e.track(task)

    async def _store_and_relay(
        self,
        topic: str,
        entries: list[CursorEntry],
        fields: dict[str, str],
        event: str,
        payload: Any,
    ) -> None:
        try:
            await with_breaker(
                self._breaker, lambda: self._kv.map_put_many(self.key(topic), fields, ttl=self.ttl)
            )
        except Exception as exc:
            log.debug("cursor: store for %r skipped or failed: %s", topic, exc)
            return  # never relay what was not stored
        await self._relay.publish(topic, event, payload)

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
        await self._relay.publish_many([(t, "remove", {"key": e.key}) for t, e in entries.items()])

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
        return entry

    # -- reading ---------------------------------------------------------------------
    async def list(self, topic: str) -> list[dict[str, Any]]:
        """Every live entry of ``topic`` on every instance: ``[{key, user, data}]``."""
        items = await with_breaker(self._breaker, lambda: self._kv.map_items(self.key(topic)))
        return decode_entries(items)

    async def snapshot(self, conn: Connection, topic: str, platform: Platform) -> None:
        """Send ``conn`` a ``bulk`` frame of the live entries (nothing when there are none)."""
        entries = await self.list(topic)
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
        """Wait until every write and relay started so far has finished."""
        pending = {t for s in self._conns.values() for e in s.topics.values() for t in e.writes}
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

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
