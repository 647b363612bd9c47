"""Local state and internal steps of :class:`~uwsx.features.presence.Presence`.

:class:`PresenceCore` owns everything the public methods share: which connections joined or
observe which topics, each topic's :class:`~uwsx.features.presence_diff.TopicState`, the diff
buffer, the storage adapter and the event channels; and the steps that are not public API
(emitting diffs, reading and reconciling a topic, the join's one-tick write, rolling back a
failed join, finishing leaves, applying remote events). See :mod:`uwsx.features.presence` for
the guarantee.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uwsx import _runtime
from uwsx.features.presence_data import UserData, decode_topic_map
from uwsx.features.presence_diff import DiffBuffer, Op, TopicState
from uwsx.features.presence_events import EventChannels, Inbound, Outbound
from uwsx.features.presence_leave import Removal, Restore, finish_leave
from uwsx.features.presence_store import PresenceStore
from uwsx.metrics import MetricsLike
from uwsx.platform import Connection, Platform
from uwsx.ports.kv import KV
from uwsx.ports.pubsub import LossWindow, PubSub
from uwsx.reliability.breaker import CircuitBreaker

if TYPE_CHECKING:
    from uwsx.features.presence_hooks import PresenceBackground

__all__ = [
    "MAX_PRESENCE_CONNECTIONS",
    "MAX_PRESENCE_TOPICS",
    "STATE_PREFIX",
    "JoinStep",
    "PresenceCore",
    "alive",
]

log = logging.getLogger("uwsx.presence")

MAX_PRESENCE_CONNECTIONS = 10_000_000
MAX_PRESENCE_TOPICS = 10_000_000
STATE_PREFIX = "__presence:"


@dataclass(slots=True)
class JoinStep:
    """How far a join got: ``wrote`` (its write and its event were issued), ``applied`` (the
    write is known to have applied), ``updated`` (it replaced a held user's data)."""

    data: Any
    wrote: bool = False
    applied: bool = False
    updated: bool = False


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
        self._issued = 0
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

    def _issue(self) -> int:
        """A serial ordering issued storage writes (removals against later re-joins)."""
        self._issued += 1
        return self._issued

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

    def _drop_idle(self, topic: str) -> bool:
        """Forget ``topic`` if nothing local uses it; True when its channel may go."""
        state = self._topics.get(topic)
        if state is not None and not state.has_audience:
            del self._topics[topic]
        return topic not in self._topics

    async def _release(self, topic: str) -> None:
        if self._drop_idle(topic):
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
        if state is not None:
            self._absorb(topic, state, items, mark)

    def _absorb(self, topic: str, state: TopicState, items: dict[str, str], mark: int) -> None:
        """Turn a snapshot read after operation ``mark`` into diffs."""
        if self._topics.get(topic) is not state:
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

    # -- joining -------------------------------------------------------------------------
    async def _write(
        self, topic: str, key: str, entry: tuple[Any, float], event: str, step: JoinStep
    ) -> int:
        """Store ``entry``, read the topic's snapshot and announce ``event`` to the other
        instances, issued in one tick (one round trip on a pipelining adapter); absorb the
        snapshot and return the user's other holders.

        The event goes out before the write's result is known: receivers ignore a join for a
        user they already show with equal data, and a write that fails is compensated
        (:meth:`_undo`).
        """
        state = self._state(topic)
        async with self._store.ordered(topic, key):
            self._store.guard()
            step.wrote = True
            state.put_at[key] = self._issue()
            mark = self._ops
            state.reading += 1
            try:
                announce = self._channels.publish(topic, event, key, entry[0])
                result = await self._store.put_and_read(topic, key, *entry, announce)
            finally:
                state.reading -= 1
        step.applied = result.others is not None
        if result.error is not None:
            raise result.error
        self._absorb(topic, state, result.items, mark)
        assert result.others is not None
        return result.others

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
        step: JoinStep,
    ) -> None:
        """Revert a failed join, its stored entry and its announcement; storage compensation
        is best effort, even with the breaker open (entries expire within ``ttl`` otherwise)."""
        self._unstage(conn, topic, key)
        state = self._topics.get(topic)
        events: list[Outbound] = []
        if state is not None and step.updated and prev is not None:
            state.held[key] = prev
            if self.platform is not None:
                self._emit(self.platform, topic, key, "join", prev[0])
            if step.wrote:
                events.append((topic, "updated", key, prev[0]))
        others = state.conns.get(key) if state is not None else None
        if step.wrote and state is not None and others:
            held = state.held.get(key) or (list(others.values())[-1], self._clock.wall())
            try:
                async with self._store.ordered(topic, key):
                    await self._store.put(topic, key, *held, guard=False)
            except Exception as exc:
                log.warning("presence: restoring %r after a failed join failed: %s", key, exc)
            if not step.updated:
                events.append((topic, "updated", key, held[0]))
        elif step.wrote:
            await self._compensate(topic, key, step)
        await self._channels.publish_many(events)
        await self._release(topic)

    async def _compensate(self, topic: str, key: str, step: JoinStep) -> None:
        """Remove what a join wrote, and withdraw its announcement unless someone else
        announced the leave (exactly one leave event per "last holder gone")."""
        try:
            async with self._store.ordered(topic, key):
                removal = await self._store.remove(topic, key)
        except Exception as exc:
            log.warning("presence: removing %r after a failed join failed: %s", key, exc)
            return
        state = self._topics.get(topic)
        if removal.gone and state is not None and key in state.view and self.platform:
            self._emit(self.platform, topic, key, "leave", state.view[key])
        # Not removed by us and nobody left: the write never applied (else whoever removed
        # it saw "gone" and announced the leave).
        never_applied = not removal.removed and not removal.remaining and not step.applied
        if removal.gone or never_applied:
            await self._channels.publish(topic, "leave", key, step.data)

    # -- leaving -------------------------------------------------------------------------
    async def _finish_leave(
        self,
        platform: Platform,
        topics: list[str],
        removes: list[Removal],
        restores: list[Restore],
    ) -> None:
        await finish_leave(self, platform, topics, removes, restores)

    # -- remote events -----------------------------------------------------------------
    def _on_event(self, sender: str, event: Inbound) -> None:
        topic, name, key, data = event
        state = self._topics.get(topic)
        platform = self.platform
        if state is None or platform is None:
            return
        if name == "leave":
            if key in state.held:
                return  # we still hold this user: a stale or forged leave
            if state.joined_by.pop(key, sender) != sender:
                # Another instance announced this user last: its join may have overtaken
                # this leave on the way (joins are announced with the write, leaves after).
                self._background.verify_soon(topic)
            self._emit(platform, topic, key, "leave", data)
            return
        state.joined_by[key] = sender
        if state.shows(key, data):
            # Joins are announced before the write's outcome is known, by every instance
            # that gains a first local tab of the user: one already shown is no news.
            self._ops += 1
            state.touch(key, self._ops)
            return
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
