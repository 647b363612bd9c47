"""Server hooks of :class:`~uwsx.features.sharded_bus.ShardedBus`: per-connection follow
tracking with background retry.

A connection's topic is recorded only once its follow succeeded. A follow that fails (breaker
open, backend down) is remembered as *pending* and retried with exponential backoff (and at once
when the breaker heals or the bus is activated), because the connection is already subscribed
locally and would otherwise silently miss other instances' messages. Unsubscribing or closing
the connection cancels its pending follows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from uwsx._runtime.clock import wait_event
from uwsx.platform import Connection, Platform

if TYPE_CHECKING:
    from uwsx.features.sharded_bus import ShardedBus

__all__ = ["MAX_RETRY_DELAY", "ShardedBusHooks"]

log = logging.getLogger("uwsx.sharded_bus")

#: Longest delay between retries of failed hook follows (seconds).
MAX_RETRY_DELAY = 30.0


class ShardedBusHooks:
    """Server hooks (each usable when taken off the object: ``subscribe = bus.hooks.subscribe``).
    ``__``-prefixed topics are never followed."""

    def __init__(self, bus: ShardedBus, retry_interval: float) -> None:
        self._bus = bus
        self._retry_interval = retry_interval
        self._followed: dict[Connection, set[str]] = {}
        self._pending: dict[Connection, set[str]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- hook surface ------------------------------------------------------------------
    async def subscribe(
        self, conn: Connection, topic: str, *, platform: Platform | None = None
    ) -> None:
        """Follow ``topic`` for ``conn`` (no-op when it already does)."""
        if not isinstance(topic, str) or not topic or topic.startswith("__"):
            return
        await self._follow(conn, [topic])

    async def subscribe_batch(
        self, conn: Connection, topics: Sequence[str] | None, *, platform: Platform | None = None
    ) -> None:
        """Follow several topics with one subscribe call; non-lists and empty lists are
        ignored, as are non-strings, ``__`` topics and topics ``conn`` already follows."""
        if not isinstance(topics, list | tuple) or not topics:
            return
        fresh = [t for t in dict.fromkeys(topics) if isinstance(t, str) and t and t[:2] != "__"]
        if fresh:
            await self._follow(conn, fresh)

    async def unsubscribe(
        self, conn: Connection, topic: str, *, platform: Platform | None = None
    ) -> None:
        """Unfollow ``topic`` if ``conn`` followed it through the hooks."""
        await self._unfollow(conn, [topic])

    async def close(self, conn: Connection, *, platform: Platform | None = None) -> None:
        """Unfollow every topic ``conn`` followed through the hooks."""
        await self._unfollow(conn, None)

    # -- observation -------------------------------------------------------------------
    def topics_of(self, conn: Connection) -> frozenset[str]:
        """Topics ``conn`` follows (successfully) through the hooks."""
        return frozenset(self._followed.get(conn, ()))

    def pending_of(self, conn: Connection) -> frozenset[str]:
        """Topics whose follow failed and is being retried."""
        return frozenset(self._pending.get(conn, ()))

    # -- internals ---------------------------------------------------------------------
    async def _follow(self, conn: Connection, topics: list[str]) -> None:
        known = self._followed.get(conn, set()) | self._pending.get(conn, set())
        fresh = [t for t in topics if t not in known]
        if not fresh:
            return
        bus = self._bus
        try:
            if len(fresh) == 1:
                await bus.follow(fresh[0])
                followed = fresh
            else:
                followed = await bus.follow_batch(fresh)
        except Exception as exc:
            log.warning("sharded bus: follow of %s failed (%s); will retry", fresh, exc)
            self._pending.setdefault(conn, set()).update(fresh)
            self._start()
            return
        if followed:
            self._followed.setdefault(conn, set()).update(followed)

    async def _unfollow(self, conn: Connection, topics: list[str] | None) -> None:
        pending = self._pending.get(conn)
        if pending is not None:
            pending.difference_update(set(pending) if topics is None else topics)
            if not pending:
                del self._pending[conn]
        tracked = self._followed.get(conn)
        if not tracked:
            return
        gone = set(tracked) if topics is None else tracked.intersection(topics)
        tracked.difference_update(gone)
        if not tracked:
            del self._followed[conn]
        await asyncio.gather(*(self._bus.unfollow(t) for t in sorted(gone)))

    def wake(self) -> None:
        """Retry pending follows now (the breaker healed or the bus was activated)."""
        if self._pending:
            self._wake.set()

    def clear(self) -> None:
        self._pending.clear()
        self._followed.clear()

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = self._bus._tasks.spawn(self._retry_loop(), name="uwsx-sharded-retry")

    async def _retry_loop(self) -> None:
        bus = self._bus
        delay = self._retry_interval
        while self._pending:
            await wait_event(self._wake, delay, bus._clock)
            self._wake.clear()
            if not bus.active:
                continue
            failed = False
            for conn, topics in list(self._pending.items()):
                try:
                    followed = await bus.follow_batch(sorted(topics))
                except Exception as exc:
                    log.debug("sharded bus: retried follow failed: %s", exc)
                    failed = True
                    break
                # ``topics`` is the live pending set: an unsubscribe during the await removed
                # its topics from it.
                still_wanted = [t for t in followed if t in topics]
                topics.difference_update(followed)
                if not topics and self._pending.get(conn) is topics:
                    del self._pending[conn]
                if still_wanted:
                    self._followed.setdefault(conn, set()).update(still_wanted)
                # Topics unsubscribed while the follow was in flight give their refs back.
                for topic in followed:
                    if topic not in still_wanted:
                        await bus.unfollow(topic)
            delay = min(delay * 2, MAX_RETRY_DELAY) if failed else self._retry_interval
