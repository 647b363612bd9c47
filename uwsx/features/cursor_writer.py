"""The write path of :class:`~uwsx.features.cursor.Cursor`: one ordered queue per cursor object.

Every broadcast is queued here and a single task drains the queue: it takes everything queued
so far, stores it (one ``map_put_many`` per topic, all in one tick) and then relays the
envelopes of what was stored, in queue order, with one ``publish_many``. Only then does it take
the next batch.

Guarantee: the relays of one cursor object reach the channel in broadcast order, whatever the
connection layout (one pipelined connection or a pool whose requests overtake each other), and
a position is relayed only after it was stored. (Each broadcast used to be stored and relayed by
its own task, so over a connection pool a remote client could receive an older position after a
newer one.) Storage writes are ordered the same way: a batch's writes start only after the
previous batch finished. Each queued write has a future that completes once the batch holding it
was stored and relayed (or failed); it never raises.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uwsx._runtime import buggify
from uwsx.reliability.breaker import with_breaker

if TYPE_CHECKING:
    from uwsx.features.cursor import Cursor

__all__ = ["CursorWriter"]

log = logging.getLogger("uwsx.cursor")


@dataclass(eq=False, slots=True)
class _Write:
    topic: str
    fields: dict[str, str]
    event: str
    payload: Any
    version: int
    done: asyncio.Future[None]


class CursorWriter:
    """Stores, then relays, a cursor object's broadcasts in order (see the module docstring)."""

    def __init__(self, cursor: Cursor) -> None:
        self._cursor = cursor
        self._queue: list[_Write] = []
        self._pending: set[asyncio.Future[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def submit(
        self, topic: str, fields: dict[str, str], event: str, payload: Any, version: int
    ) -> asyncio.Future[None]:
        """Queue a store of ``fields`` in ``topic``'s map, then a relay of ``event``.

        :returns: a future completed once the write (and its relay) finished or failed.
        :raises RuntimeError: the cursor is closed (nothing was queued).
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._task is None:
            self._task = self._cursor._tasks.spawn(self._drain(), name="uwsx-cursor-write")
        self._queue.append(_Write(topic, fields, event, payload, version, done))
        self._pending.add(done)
        done.add_done_callback(self._pending.discard)
        return done

    async def drained(self) -> None:
        """Wait until every write queued so far has finished."""
        if self._pending:
            await asyncio.gather(*list(self._pending))

    async def _drain(self) -> None:
        batch: list[_Write] = []
        try:
            while self._queue:
                if buggify("cursor.writer_late"):
                    # The writer task runs a tick late: later broadcasts join its batch.
                    await self._cursor._clock.sleep(0)
                batch, self._queue = self._queue, []
                await self._write(batch)
                _finish(batch)
        finally:
            # Cancelled (the cursor is closing): nobody may wait forever on a dropped write.
            _finish(batch)
            _finish(self._queue)
            self._queue = []
            self._task = None

    async def _write(self, batch: list[_Write]) -> None:
        by_topic: dict[str, dict[str, str]] = {}
        for w in batch:
            # A later write of one field replaces an earlier one: only the newest is stored.
            by_topic.setdefault(w.topic, {}).update(w.fields)
        topics = list(by_topic)
        results = await asyncio.gather(*(self._store(t, by_topic[t]) for t in topics))
        stored = {t for t, ok in zip(topics, results, strict=True) if ok}
        frames = [(w.topic, w.event, w.payload, w.version) for w in batch if w.topic in stored]
        if frames:
            await self._cursor._relay.publish_many(frames)

    async def _store(self, topic: str, fields: dict[str, str]) -> bool:
        cursor = self._cursor
        try:
            await with_breaker(
                cursor._breaker,
                lambda: cursor._kv.map_put_many(cursor.key(topic), fields, ttl=cursor.ttl),
            )
        except Exception as exc:
            log.debug("cursor: store for %r skipped or failed: %s", topic, exc)
            return False  # never relay what was not stored
        return True


def _finish(batch: list[_Write]) -> None:
    for w in batch:
        if not w.done.done():
            w.done.set_result(None)
