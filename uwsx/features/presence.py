"""``Presence``: cluster-wide "who is in topic X", deduplicated per user across tabs and
instances, streamed to clients as coalesced diffs.

Storage: one KV map per topic, ``presence:topic:<topic>``, with one field per (user, instance)
whose deadline is ``ttl`` (see :mod:`uwsx.features.presence_data`). Each instance re-puts its
own fields every ``heartbeat``. Joining and leaving are single atomic map operations that also
count the user's other holders, so exactly one instance counts a user's first join, and exactly
one announces the leave when the last holder goes, even when two instances leave the same user
at once.

Round trips (on an adapter that pipelines one event-loop tick's operations): a user's first
local tab is one, because its write, its snapshot read and its join event are issued together
(the snapshot, pipelined after the write, observes it; on an adapter that reorders, the write
is confirmed first and the snapshot read again). So the event leaves before the write's verdict:
every instance gaining a first local tab of the user announces it, and receivers drop a join
for a user they already show with equal data, so clients still get one join diff; a join whose
write fails withdraws its event (a leave, unless another holder remains or someone else
announced the leave). A leave is one removal, followed by the one leave event only when it
removed the last holder (the event has to wait for that verdict); a leave-all or a mass
disconnect issues all its removals in one pipeline and all its events in one publish. A
heartbeat (refreshes and reconciling reads) is one.

Guarantee: clients of ``__presence:<topic>`` receive one ``presence_state`` on join/sync and
then ``presence_diff`` frames that converge on the topic's stored membership. A user whose
instance crashed disappears from storage ``ttl`` after its last heartbeat, and every instance's
next heartbeat turns that into a leave diff for its clients (the original never told remote
clients; see :mod:`uwsx.features.presence_diff`). Anonymous users get keys scoped by instance
id, so two instances' anonymous users never merge (the original's ``__conn:N`` collided).

Invariants (Checked by: ``uwsx_sim`` presence checker):

* PR-1 no phantom: a user a client is shown as present had a live holder, or a join in
  progress, at some point after the client's last update for that user (a join's event leaves
  with its write; a join that fails withdraws it, else the next heartbeat read does).
* PR-2 no resurrection: once a client was told a user left, it is not told the user joined
  again unless some instance joined (or still held) that user after the leave.
* PR-3 convergence: within ``ttl + heartbeat`` plus clock skew after membership stops changing,
  every client's view equals the stored membership.

Client wire on ``__presence:<topic>``: ``presence_state`` ``{key: data}`` (unicast),
``presence_diff`` ``{joins: {key: data}, leaves: {key: data}}`` (``relay=False``) and
``heartbeat`` ``[keys held by this instance]``. Other instances hear ``{instanceId, topic, event,
payload: {key, data}}`` on ``presence:events:<topic>``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from uwsx import _runtime
from uwsx.connect import require
from uwsx.features.presence_core import (
    MAX_PRESENCE_CONNECTIONS,
    MAX_PRESENCE_TOPICS,
    STATE_PREFIX,
    JoinStep,
    PresenceCore,
    alive,
)
from uwsx.features.presence_data import Select, UserData, decode_topic_map
from uwsx.features.presence_hooks import PresenceBackground, PresenceHooks
from uwsx.features.presence_leave import Removal, Restore
from uwsx.features.presence_store import TOPIC_KEY_PREFIX
from uwsx.metrics import NULL_METRICS, MetricsLike
from uwsx.platform import Connection, Platform
from uwsx.ports.backend import Backend, Capability
from uwsx.reliability.breaker import CircuitBreaker

__all__ = [
    "MAX_PRESENCE_CONNECTIONS",
    "MAX_PRESENCE_TOPICS",
    "STATE_PREFIX",
    "TOPIC_KEY_PREFIX",
    "Presence",
    "PresenceHooks",
    "PresenceStats",
]

log = logging.getLogger("uwsx.presence")


@dataclass(frozen=True, slots=True)
class PresenceStats:
    """``total_online``: distinct local users summed over topics; ``heartbeat_latency``:
    seconds the last heartbeat took; ``stale_cleaned_total``: users this instance saw vanish
    from storage without a leave (crashed holders), announced as leaves."""

    total_online: int
    heartbeat_latency: float
    stale_cleaned_total: int


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    if value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


class Presence(PresenceCore):
    """Cluster-wide presence (see the module docstring).

    :param backend: a backend with the ``kv`` and ``pubsub`` ports (and ``key_expiry_events``
        when ``keyspace_notifications`` is on).
    :param key: the ``user_data`` field identifying a user across tabs.
    :param select: picks the public fields broadcast for a user.
    :param heartbeat: seconds between refreshes of this instance's entries (< ``ttl``).
    :param ttl: seconds an entry outlives its last refresh (crashed instances vanish then).
    :param keyspace_notifications: also send an empty ``presence_state`` when a topic's whole
        map expires (no instance left refreshing it). Enable it on every instance or none.
    :param max_envelope_bytes: largest received event accepted.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        key: str = "id",
        select: Select | None = None,
        heartbeat: float = 30.0,
        ttl: float = 90.0,
        keyspace_notifications: bool = False,
        max_envelope_bytes: int = 1024 * 1024,
        breaker: CircuitBreaker | None = None,
        metrics: MetricsLike | None = None,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty string")
        self.heartbeat = _seconds(heartbeat, "heartbeat")
        self.ttl = _seconds(ttl, "ttl")
        if self.heartbeat >= self.ttl:
            raise ValueError("heartbeat must be shorter than ttl (entries would expire)")
        if not isinstance(keyspace_notifications, bool):
            raise TypeError("keyspace_notifications must be a bool")
        caps = (Capability.KEY_EXPIRY_EVENTS,) if keyspace_notifications else ()
        require(backend, "Presence", ports=("kv", "pubsub"), capabilities=caps)
        kv, pubsub = backend.kv, backend.pubsub
        assert kv is not None
        assert pubsub is not None
        super().__init__(
            kv,
            pubsub,
            key=key,
            user=UserData(select, owner="presence"),
            ttl=self.ttl,
            keyspace_notifications=keyspace_notifications,
            max_envelope_bytes=max_envelope_bytes,
            breaker=breaker,
            metrics=metrics or NULL_METRICS,
        )
        self._background = PresenceBackground(self, _runtime.current(), pubsub, self._metrics)
        self.hooks = PresenceHooks(self)

    @staticmethod
    def storage_key(topic: str) -> str:
        """The KV map holding ``topic``'s entries."""
        return TOPIC_KEY_PREFIX + topic

    # -- join --------------------------------------------------------------------------
    async def join(self, conn: Connection, topic: str, platform: Platform) -> None:
        """Add ``conn`` to ``topic``'s presence (``__`` topics and repeated joins are no-ops).

        A user's first local tab costs one round trip on a pipelining adapter (write, snapshot
        and event issued together), plus one subscribe for a topic new to this instance.
        Every step is undone when a later one fails (local state, the stored entry, the
        announcement, the subscription); a connection found closed midway is rolled back
        silently.

        :raises CircuitBrokenError: the breaker is open (nothing changed).
        :raises RuntimeError: beyond the local connection/topic caps.
        """
        if not isinstance(topic, str) or not topic:
            raise ValueError("topic must be a non-empty string")
        if topic.startswith("__"):
            return
        joined = self._joined.get(conn)
        if joined is not None and topic in joined:
            return
        if joined is None and len(self._joined) >= MAX_PRESENCE_CONNECTIONS:
            raise RuntimeError(
                f"presence: local connection count exceeded {MAX_PRESENCE_CONNECTIONS}"
            )
        key = self._key_of(conn)
        data = self._user.public(conn.user_data)
        self.platform = platform
        self._background.ensure_started()
        state = self._state(topic)
        prev_count = len(state.conns.get(key, ()))
        prev = state.held.get(key)
        self._joined.setdefault(conn, {})[topic] = key
        state.conns.setdefault(key, {})[conn] = data
        step = JoinStep(data)
        fresh: tuple[Any, float] | None = None
        is_new = False
        try:
            await self._channels.want(topic)
            if self._staged(conn, topic, key) and not alive(conn):
                await self._undo(conn, topic, key, prev, step)
                return
            if self._staged(conn, topic, key):
                if prev_count == 0:
                    fresh = (data, self._clock.wall())
                    is_new = await self._write(topic, key, fresh, "join", step) == 0
                elif prev is not None and prev[0] != data:
                    step.updated = True
                    state.held[key] = (data, self._clock.wall())
                    await self._write(topic, key, state.held[key], "updated", step)
                    self._emit(platform, topic, key, "join", data)
                else:
                    await self._read(topic, self._store.writes)
        except BaseException:
            await self._undo(conn, topic, key, prev, step)
            raise
        if not self._staged(conn, topic, key):
            # Left while joining: its leave cleaned local state; drop what this call wrote.
            if step.wrote and key not in state.conns:
                await self._compensate(topic, key, step)
            return
        try:
            conn.subscribe(STATE_PREFIX + topic)
        except Exception:
            await self._undo(conn, topic, key, prev, step)
            return
        if fresh is not None:
            state.held[key] = fresh
        if is_new:
            self._m_joins.inc(topic=self._map_topic(topic))
        if not state.shows(key, data):
            self._emit(platform, topic, key, "join", data)
        platform.send(conn, STATE_PREFIX + topic, "presence_state", dict(state.view))

    # -- sync ----------------------------------------------------------------------------
    async def sync(self, conn: Connection, topic: str, platform: Platform) -> None:
        """Watch ``topic`` without being counted: one ``presence_state``, then diffs.

        :raises CircuitBrokenError: the breaker is open (nothing changed).
        """
        if not isinstance(topic, str) or not topic:
            raise ValueError("topic must be a non-empty string")
        self.platform = platform
        self._background.ensure_started()
        state = self._state(topic)
        state.observers.add(conn)
        self._observing.setdefault(conn, set()).add(topic)
        try:
            await self._channels.want(topic)
            await self._read(topic, self._store.writes)
        except BaseException:
            await self.unobserve(conn, topic)
            raise
        try:
            conn.subscribe(STATE_PREFIX + topic)
        except Exception:
            await self.unobserve(conn, topic)
            return
        platform.send(conn, STATE_PREFIX + topic, "presence_state", dict(state.view))

    async def unobserve(self, conn: Connection, topic: str) -> None:
        """Stop ``conn`` observing ``topic`` (``hooks.unsubscribe`` of ``__presence:X``)."""
        self._unobserve(conn, topic)
        await self._release(topic)

    def _unobserve(self, conn: Connection, topic: str) -> None:
        observed = self._observing.get(conn)
        if observed is not None:
            observed.discard(topic)
            if not observed:
                del self._observing[conn]
        state = self._topics.get(topic)
        if state is not None:
            state.observers.discard(conn)

    # -- leave ---------------------------------------------------------------------------
    async def leave(self, conn: Connection, platform: Platform, topic: str | None = None) -> None:
        """Remove ``conn`` from ``topic`` (every joined and observed topic when None).

        All storage work of one call (the removals, restores of a remaining tab's data) and
        the unsubscribe of emptied channels go out in one tick, then every resulting event
        in one publish: a leave-all is two round trips whatever the number of topics.
        Never raises for backend reasons: while the breaker is open no storage call is made
        and no leave is announced (the entry expires within ``ttl``, and every instance's
        heartbeat then announces the leave).
        """
        joined = self._joined.get(conn, {})
        observed = self._observing.get(conn, set())
        topics = list(dict.fromkeys([*joined, *observed])) if topic is None else [topic]
        removes: list[Removal] = []
        restores: list[Restore] = []
        for name in topics:
            key = joined.get(name)
            state = self._topics.get(name)
            if key is not None:
                data = state.conns.get(key, {}).get(conn) if state is not None else None
                self._unstage(conn, name, key)
                _unsubscribe(conn, STATE_PREFIX + name)
                if state is not None and key not in state.conns:
                    held = state.held.pop(key, None)
                    removes.append((name, key, held[0] if held is not None else data))
                elif state is not None:
                    remaining = list(state.conns[key].values())[-1]
                    held = state.held.get(key)
                    if held is not None and held[0] != remaining:
                        state.held[key] = (remaining, self._clock.wall())
                        restores.append((name, key, remaining, held))
            if name in observed:
                self._unobserve(conn, name)
                _unsubscribe(conn, STATE_PREFIX + name)
        await self._finish_leave(platform, topics, removes, restores)

    # -- queries -------------------------------------------------------------------------
    async def list(self, topic: str) -> list[Any]:
        """The data of every user present on ``topic`` on any instance (unordered)."""
        return list(decode_topic_map(await self._store.items(topic)).values())

    async def count(self, topic: str) -> int:
        """Distinct users present on ``topic`` on any instance."""
        return len(decode_topic_map(await self._store.items(topic)))

    def stats(self) -> PresenceStats:
        """A synchronous snapshot of local counters (the original's ``metrics()``)."""
        return PresenceStats(
            total_online=sum(len(s.held) for s in self._topics.values()),
            heartbeat_latency=self._background.latency,
            stale_cleaned_total=self._stale_total,
        )

    def flush_diffs(self) -> None:
        """Publish pending ``presence_diff`` frames now (idempotent)."""
        self._diffs.flush()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the heartbeat (and key-expiry events); the first join or sync also does."""
        self._background.ensure_started()

    async def beat(self) -> None:
        """Run one heartbeat now (what the timer does every ``heartbeat`` seconds)."""
        await self._background.beat()

    async def clear(self) -> None:
        """Delete every presence entry in storage (all instances), unsubscribe local clients
        and drop all local state, pending diffs included.

        :raises CircuitBrokenError: the breaker is open (nothing changed).
        """
        self._diffs.hold()  # a flush during the delete would publish what clear drops
        try:
            await self._store.clear()
        except BaseException:
            self._diffs.release()
            raise
        for conn, topics in list(self._joined.items()):
            for topic in topics:
                _unsubscribe(conn, STATE_PREFIX + topic)
        for conn, observed in list(self._observing.items()):
            for topic in observed:
                _unsubscribe(conn, STATE_PREFIX + topic)
        self._joined.clear()
        self._observing.clear()
        self._topics.clear()
        self._anonymous.clear()
        self._anon_serial = 0
        self._diffs.clear()
        self._diffs.release()
        await self._channels.release_all()

    async def close(self) -> None:
        """Stop the heartbeat and every subscription and drop pending diffs (entries in
        storage expire within ``ttl``). Idempotent, never raises."""
        await self._background.close()
        await self._channels.close()
        self._diffs.clear()
        self.platform = None

    async def __aenter__(self) -> Presence:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _unsubscribe(conn: Connection, topic: str) -> None:
    try:
        conn.unsubscribe(topic)
    except Exception:
        return
