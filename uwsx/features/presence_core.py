"""Local state and internal steps of :class:`~uwsx.features.presence.Presence`.

:class:`PresenceCore` owns everything the public methods share: which connections joined or
observe which topics, each topic's :class:`~uwsx.features.presence_diff.TopicState`, the diff
buffer, the storage adapter and the event channels; and the steps that are not public API
(emitting diffs, reading and reconciling a topic, rolling back a failed join, announcing
leaves, applying remote events). See :mod:`uwsx.features.presence` for the guarantee.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from uwsx import _runtime
from uwsx.errors import CircuitBrokenError
from uwsx.features.presence_data import UserData, decode_topic_map
from uwsx.features.presence_diff import DiffBuffer, Op, TopicState
from uwsx.features.presence_events import EventChannels, Inbound
from uwsx.features.presence_store import PresenceStore
from uwsx.metrics import MetricsLike
from uwsx.platform import Connection, Platform
from uwsx.ports.kv import KV, MapRemoval
from uwsx.ports.pubsub import LossWindow, PubSub
from uwsx.reliability.breaker import CircuitBreaker

if TYPE_CHECKING:
    from uwsx.features.presence_hooks import PresenceBackground

__all__ = [
    "MAX_PRESENCE_CONNECTIONS",
    "MAX_PRESENCE_TOPICS",
    "STATE_PREFIX",
    "PresenceCore",
    "alive",
]

log = logging.getLogger("uwsx.presence")

MAX_PRESENCE_CONNECTIONS = 10_000_000
MAX_PRESENCE_TOPICS = 10_000_000
STATE_PREFIX = "__presence:"


class PresenceCore:
    """Shared state and internal steps (the public API is on ``Presence``)."""

    _background: PresenceBackground

    def __init__(
        self,
        kv: KV,
        pubsub: PubSub,
        *,
        key: str,
        user: UserData,
        ttl: float,
        keyspace_notifications: bool,
        max_envelope_bytes: int,
        breaker: CircuitBreaker | None,
        metrics: MetricsLike,
    ) -> None:
        self.ttl = ttl
        self._user = user
        self.key = key
        self.keyspace_notifications = keyspace_notifications
        self._breaker = breaker
        rt = _runtime.current()
        self._clock = rt.clock
        self.instance_id = rt.ids.hex(8)
        self._store = PresenceStore(
            kv,
            instance_id=self.instance_id,
            ttl=self.ttl,
            whole_key_ttl=keyspace_notifications,
            breaker=breaker,
        )
        self._joined: dict[Connection, dict[str, str]] = {}
        self._observing: dict[Connection, set[str]] = {}
        self._topics: dict[str, TopicState] = {}
        self._anonymous: dict[Connection, str] = {}
        self._anon_serial = 0
        self._ops = 0
        self._stale_total = 0
        #: The platform of the latest join or sync: where remote events are published.
        self.platform: Platform | None = None
        self._channels = EventChannels(
            pubsub,
            instance_id=self.instance_id,
            wanted=lambda topic: topic in self._topics,
            on_event=self._on_event,
            on_loss=self._on_loss,
            breaker=breaker,
            max_envelope_bytes=max_envelope_bytes,
        )
        m = self._metrics = metrics
        self._map_topic = m.map_topic
        self._diffs = DiffBuffer(m)
        self._m_joins = m.counter("presence_joins_total", "Users joined", ("topic",))
        self._m_leaves = m.counter("presence_leaves_total", "Users left", ("topic",))
        self._m_stale = m.counter(
            "presence_stale_cleaned_total", "Users seen vanishing without a leave"
        )

    # -- helpers -----------------------------------------------------------------------
    def _key_of(self, conn: Connection) -> str:
        value = self._user.visible(conn.user_data).get(self.key)
        if value is not None:
            return str(value)
        anon = self._anonymous.get(conn)
        if anon is None:
            self._anon_serial += 1
            anon = self._anonymous[conn] = f"__conn:{self.instance_id}:{self._anon_serial}"
        return anon

    def _emit(self, platform: Platform, topic: str, key: str, op: Op, data: Any) -> None:
        """Buffer a diff for local clients and record it in the topic's view (a topic whose
        local audience just left still gets the frame, as in the original)."""
        state = self._topics.get(topic)
        self._ops += 1
        if state is not None:
            state.apply(key, op, data, self._ops)
        self._diffs.add(platform, topic, key, op, data)

    def _state(self, topic: str) -> TopicState:
        state = self._topics.get(topic)
        if state is None:
            if len(self._topics) >= MAX_PRESENCE_TOPICS:
                raise RuntimeError(f"presence: local topic count exceeded {MAX_PRESENCE_TOPICS}")
            state = self._topics[topic] = TopicState()
        return state

    async def _release(self, topic: str) -> None:
        state = self._topics.get(topic)
        if state is not None and not state.has_audience:
            del self._topics[topic]
        if topic not in self._topics:
            await self._channels.release(topic)

    # -- reading and reconciling -------------------------------------------------------
    async def _read(self, topic: str, after: int) -> None:
        """Read ``topic``'s map (sharing a read that started after write ``after``) and
        absorb it into the view."""
        await self._store.shared(topic, after, lambda: self._read_now(topic))

    async def _read_now(self, topic: str) -> None:
        state = self._topics.get(topic)
        mark = self._ops
        if state is not None:
            state.reading += 1
        try:
            items = await self._store.items(topic)
        finally:
            if state is not None:
                state.reading -= 1
        if state is None or self._topics.get(topic) is not state:
            return
        platform = self.platform
        for key, op, data in state.absorb(decode_topic_map(items), mark):
            if op == "leave":
                self._stale_total += 1
                self._m_stale.inc()
            if platform is not None:
                self._emit(platform, topic, key, op, data)
        if not state.reading:
            state.touched.clear()

    def _staged(self, conn: Connection, topic: str, key: str) -> bool:
        state = self._topics.get(topic)
        return (
            self._joined.get(conn, {}).get(topic) == key
            and state is not None
            and conn in state.conns.get(key, {})
        )

    def _unstage(self, conn: Connection, topic: str, key: str) -> None:
        joined = self._joined.get(conn)
        if joined is not None and joined.get(topic) == key:
            del joined[topic]
            if not joined:
                del self._joined[conn]
                if conn not in self._observing:
                    self._anonymous.pop(conn, None)
        state = self._topics.get(topic)
        if state is not None:
            conns = state.conns.get(key)
            if conns is not None:
                conns.pop(conn, None)
                if not conns:
                    del state.conns[key]

    async def _undo(
        self,
        conn: Connection,
        topic: str,
        key: str,
        prev: tuple[Any, float] | None,
        *,
        wrote: bool,
        updated: bool,
    ) -> None:
        """Revert a failed join; storage compensation is best effort, even with the breaker
        open (the entries expire within ``ttl`` otherwise)."""
        self._unstage(conn, topic, key)
        state = self._topics.get(topic)
        if state is not None and updated and prev is not None:
            state.held[key] = prev
            if self.platform is not None:
                self._emit(self.platform, topic, key, "join", prev[0])
        if wrote and state is not None:
            others = state.conns.get(key)
            if others:
                held = state.held.get(key) or (list(others.values())[-1], self._clock.wall())
                try:
                    await self._store.put(topic, key, *held, guard=False)
                except Exception as exc:
                    log.warning("presence: restoring %r after a failed join failed: %s", key, exc)
            else:
                await self._compensate(topic, key)
        await self._release(topic)

    async def _compensate(self, topic: str, key: str) -> None:
        try:
            removal = await self._store.remove(topic, key)
        except Exception as exc:
            log.warning("presence: removing %r after a failed join failed: %s", key, exc)
            return
        state = self._topics.get(topic)
        if removal.gone and state is not None and key in state.view and self.platform:
            self._emit(self.platform, topic, key, "leave", state.view[key])

    async def _restore(
        self, platform: Platform, topic: str, key: str, data: Any, prev: tuple[Any, float]
    ) -> None:
        """Another local tab of the user remains with other data: store and announce it."""
        state = self._topics.get(topic)
        if state is None:
            return
        state.held[key] = (data, self._clock.wall())
        try:
            async with self._store.lock:
                await self._store.put(topic, key, *state.held[key])
        except Exception as exc:
            log.debug("presence: restoring %r failed: %s", key, exc)
            if state.held.get(key) is not None:
                state.held[key] = prev
            return
        self._emit(platform, topic, key, "join", data)
        await self._channels.publish(topic, "updated", key, data)

    async def _remove_all(self, platform: Platform, removes: list[tuple[str, str, Any]]) -> None:
        breaker = self._breaker
        if breaker is not None:
            try:
                breaker.guard()
            except CircuitBrokenError:
                return
        async with self._store.lock:
            results = await asyncio.gather(
                *(self._store.remove(t, k) for t, k, _ in removes), return_exceptions=True
            )
        failures = [r for r in results if isinstance(r, BaseException)]
        if breaker is not None:
            if failures:
                breaker.failure(failures[0])
            else:
                breaker.success()
        relays = []
        for (name, key, data), result in zip(removes, results, strict=True):
            if isinstance(result, MapRemoval) and result.gone:
                self._m_leaves.inc(topic=self._map_topic(name))
                self._emit(platform, name, key, "leave", data)
                relays.append(self._channels.publish(name, "leave", key, data))
        await asyncio.gather(*relays)

    # -- remote events -----------------------------------------------------------------
    def _on_event(self, event: Inbound) -> None:
        topic, name, key, data = event
        state = self._topics.get(topic)
        platform = self.platform
        if state is None or platform is None:
            return
        if name == "leave":
            if key in state.held:
                return  # we still hold this user: a stale or forged leave
            self._emit(platform, topic, key, "leave", data)
        else:
            self._emit(platform, topic, key, "join", data)

    def _on_loss(self, window: LossWindow) -> None:
        log.warning("presence: event subscription was down; reconciling every topic")
        self._background.reconcile_soon()


def alive(conn: Connection) -> bool:
    try:
        conn.buffered_amount()
    except Exception:
        return False
    return True
