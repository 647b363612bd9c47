"""Server hooks and background work of :class:`~uwsx.features.presence.Presence`.

The heartbeat (every ``heartbeat`` seconds, runtime clock):

1. probes every local connection with ``buffered_amount()``; those that raise are dead and
   get a full ``leave``, all at once (zombie cleanup);
2. sets ``presence_total_online{topic}``;
3. unless the breaker is unhealthy: re-puts this instance's fields of every topic with a fresh
   deadline (one ``map_put_many`` per topic), publishes ``heartbeat`` (the local keys) on
   ``__presence:<topic>``, and re-reads every topic with a local audience to reconcile the
   clients' view with storage (leave diffs for users whose holders crashed); the refreshes
   and the reads are issued in one tick, so a heartbeat is one round trip;
4. records its duration.

With ``keyspace_notifications`` the expiry of a whole topic map (nobody refreshed it for
``ttl``) sends an empty ``presence_state`` to local clients of that topic.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from uwsx._runtime import Runtime, buggify
from uwsx.features.presence_core import alive
from uwsx.metrics import MetricsLike
from uwsx.platform import Connection, Platform
from uwsx.ports.pubsub import PubSub, Subscription

if TYPE_CHECKING:
    from uwsx.features.presence import Presence

__all__ = ["PresenceBackground", "PresenceHooks"]

log = logging.getLogger("uwsx.presence")

_STATE = "__presence:"


class PresenceHooks:
    """Server hooks (each usable when taken off the object)."""

    def __init__(self, presence: Presence) -> None:
        self._presence = presence

    async def subscribe(self, conn: Connection, topic: str, *, platform: Platform) -> None:
        """``__presence:X`` syncs ``conn`` to X; any other topic joins it."""
        if topic.startswith(_STATE):
            await self._presence.sync(conn, topic[len(_STATE) :], platform)
        else:
            await self._presence.join(conn, topic, platform)

    async def unsubscribe(self, conn: Connection, topic: str, *, platform: Platform) -> None:
        """``__presence:X`` stops observing X; other ``__`` topics are ignored; anything else
        leaves that topic."""
        if topic.startswith(_STATE):
            await self._presence.unobserve(conn, topic[len(_STATE) :])
        elif not topic.startswith("__"):
            await self._presence.leave(conn, platform, topic)

    async def close(self, conn: Connection, *, platform: Platform) -> None:
        await self._presence.leave(conn, platform)


class PresenceBackground:
    """The heartbeat loop and the key-expiry subscription of one presence object."""

    def __init__(self, presence: Presence, rt: Runtime, pubsub: PubSub, m: MetricsLike) -> None:
        self._presence = presence
        self._clock = rt.clock
        self._pubsub = pubsub
        self.tasks = rt.task_group("Presence")
        self._loop: asyncio.Task[None] | None = None
        self._expiry: Subscription | None = None
        self._expiry_started = False
        self.latency = 0.0
        self.beats = 0
        self._map_topic = m.map_topic
        self._m_beats = m.counter("presence_heartbeats_total", "Heartbeat cycles")
        self._m_online = m.gauge(
            "presence_total_online", "Distinct local users per topic", ("topic",)
        )
        self._m_latency = m.gauge(
            "presence_heartbeat_latency_ms", "Duration of the last heartbeat (ms)"
        )
        self._m_keyspace = m.counter(
            "presence_keyspace_cleanups_total", "Topic map expiries sent as empty state"
        )

    def ensure_started(self) -> None:
        if self._loop is None:
            self._loop = self.tasks.spawn(self._run(), name="uwsx-presence-heartbeat")
        if self._presence.keyspace_notifications and not self._expiry_started:
            self._expiry_started = True
            self.tasks.spawn(self._subscribe_expired(), name="uwsx-presence-keyspace")

    async def _run(self) -> None:
        while True:
            p = self._presence
            delay = p.heartbeat
            if buggify("presence.heartbeat_late"):
                # A loaded loop runs the timer late, by well under the ttl's margin.
                delay += min(p.heartbeat, p.ttl - p.heartbeat) / 4
            await self._clock.sleep(delay)
            try:
                await self.beat()
            except Exception:
                log.exception("presence: heartbeat failed")

    async def beat(self) -> None:
        """One heartbeat (see the module docstring)."""
        p = self._presence
        started = self._clock.monotonic()
        self.beats += 1
        self._m_beats.inc()
        platform = p.platform
        if platform is not None:
            conns = [*p._joined, *(c for c in p._observing if c not in p._joined)]
            dead = [conn for conn in conns if not alive(conn)]
            await asyncio.gather(*(p.leave(conn, platform) for conn in dead))
        for topic, state in p._topics.items():
            self._m_online.set(len(state.held), topic=self._map_topic(topic))
        breaker = p._breaker
        if breaker is None or breaker.is_healthy:
            # Refreshes and reads are issued in the same tick: one round trip.
            await asyncio.gather(self._refresh(platform), self._reconcile_in_tick())
        self.latency = self._clock.monotonic() - started
        self._m_latency.set(self.latency * 1000)

    async def _refresh(self, platform: Platform | None) -> None:
        """Re-put every local entry (exclusive with leaves and joins, so it never re-creates
        a removed field nor reverts restored data), then publish the local keys."""
        p = self._presence
        store = p._store
        async with store.gate.exclusive():
            held = {t: dict(s.held) for t, s in p._topics.items() if s.held}
            results = await asyncio.gather(
                *(store.refresh(t, h) for t, h in held.items()), return_exceptions=True
            )
        for topic, result in zip(held, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("presence: refreshing %r failed: %s", topic, result)
        if platform is not None:
            for topic, entries in held.items():
                platform.publish(_STATE + topic, "heartbeat", list(entries))

    async def _reconcile_in_tick(self) -> None:
        if buggify("presence.heartbeat_split"):
            # A pooled adapter sends the reads apart from the refreshes, in either order.
            await self._clock.sleep(0)
        await self.reconcile()

    async def reconcile(self) -> None:
        """Re-read every topic with a local audience and emit the differences."""
        p = self._presence
        topics = [t for t, s in p._topics.items() if s.has_audience]
        results = await asyncio.gather(
            *(p._read(t, p._store.writes) for t in topics), return_exceptions=True
        )
        for topic, result in zip(topics, results, strict=True):
            if isinstance(result, BaseException):
                log.debug("presence: reconciling %r failed: %s", topic, result)

    def reconcile_soon(self) -> None:
        try:
            self.tasks.spawn(self.reconcile(), name="uwsx-presence-reconcile")
        except RuntimeError:
            return  # closed

    def verify_soon(self, topic: str) -> None:
        """Re-read one topic soon (a leave may have overtaken another instance's join)."""
        try:
            self.tasks.spawn(self._verify(topic), name="uwsx-presence-verify")
        except RuntimeError:
            return  # closed

    async def _verify(self, topic: str) -> None:
        p = self._presence
        if topic not in p._topics:
            return
        try:
            await p._read(topic, p._store.writes)
        except Exception as exc:
            log.debug("presence: verifying %r failed: %s", topic, exc)

    async def _subscribe_expired(self) -> None:
        try:
            self._expiry = await self._pubsub.subscribe_expired("presence:topic:", self._on_expired)
        except Exception as exc:
            log.warning("presence: key-expiry events unavailable, continuing without: %s", exc)

    def _on_expired(self, key: str) -> None:
        p = self._presence
        topic = key[len("presence:topic:") :]
        platform = p.platform
        if not topic or platform is None:
            return
        state = p._topics.get(topic)
        if state is not None:
            state.view.clear()
        platform.publish(_STATE + topic, "presence_state", {}, relay=False)
        self._m_keyspace.inc()

    async def close(self) -> None:
        await self.tasks.aclose()
        expiry, self._expiry = self._expiry, None
        if expiry is not None:
            try:
                await expiry.close()
            except Exception as exc:
                log.debug("presence: closing the expiry subscription failed: %s", exc)
