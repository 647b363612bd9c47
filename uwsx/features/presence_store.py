"""Storage side of :class:`~uwsx.features.presence.Presence`: one KV map per topic.

Every operation here is one atomic port call: ``put`` (write this instance's field for a user
and count the user's other holders: 0 means "first holder"), ``remove`` (delete it and report
whether it was the user's last holder), ``refresh`` (re-put every local field of a topic with
a fresh deadline), ``items``. Writes that can race (heartbeat re-puts against leave removals)
run under one lock, so a heartbeat never re-creates a field that a leave just removed.
Concurrent snapshot reads of one topic are shared, but only by callers whose own write had
completed before the shared read started (so a reader always sees its own write).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from uwsx.features.presence_data import encode_entry, field_name, user_prefix
from uwsx.ports.kv import KV, MapRemoval
from uwsx.reliability.breaker import CircuitBreaker, with_breaker

__all__ = ["TOPIC_KEY_PREFIX", "PresenceStore"]

TOPIC_KEY_PREFIX = "presence:topic:"


class PresenceStore:
    """Presence entries of one instance (``instance_id``) in a KV port."""

    def __init__(
        self,
        kv: KV,
        *,
        instance_id: str,
        ttl: float,
        whole_key_ttl: bool,
        breaker: CircuitBreaker | None,
    ) -> None:
        self._kv = kv
        self._instance_id = instance_id
        self._ttl = ttl
        # Keyspace mode needs the whole map to expire once nobody refreshes it. The key's TTL
        # is a little shorter than the fields': on servers with native per-field TTLs a map
        # whose last field expires first is deleted without any key-expiry event.
        self._whole_key_ttl = whole_key_ttl
        self._key_ttl = ttl * 0.95
        self._breaker = breaker
        self.lock = asyncio.Lock()
        #: Completed writes so far (orders writes before shared reads).
        self.writes = 0
        self._reads: dict[str, tuple[int, asyncio.Future[None]]] = {}

    @staticmethod
    def key(topic: str) -> str:
        return TOPIC_KEY_PREFIX + topic

    def _field(self, user_key: str) -> str:
        return field_name(user_key, self._instance_id)

    async def put(
        self, topic: str, user_key: str, data: Any, ts: float, *, guard: bool = True
    ) -> int:
        """Write this instance's field for ``user_key``; returns the user's other holders."""

        async def call() -> int:
            return await self._kv.map_put(
                self.key(topic),
                self._field(user_key),
                encode_entry(data, ts),
                ttl=self._ttl,
                prefix=user_prefix(user_key),
            )

        if self._whole_key_ttl:
            # Issued in the same tick: one pipelined round trip on adapters that coalesce.
            others, _ = await asyncio.gather(
                with_breaker(self._breaker, call) if guard else call(),
                self._kv.expire(self.key(topic), self._key_ttl),
            )
        else:
            others = await (with_breaker(self._breaker, call) if guard else call())
        self.writes += 1
        return others

    async def remove(self, topic: str, user_key: str) -> MapRemoval:
        """Delete this instance's field for ``user_key`` (``gone``: it was the last holder)."""
        return await self._kv.map_remove(
            self.key(topic), self._field(user_key), prefix=user_prefix(user_key)
        )

    async def refresh(self, topic: str, held: Mapping[str, tuple[Any, float]]) -> None:
        """Re-put every held user of ``topic`` with a fresh deadline (values unchanged)."""
        items = {self._field(k): encode_entry(d, ts) for k, (d, ts) in held.items()}
        if not items:
            return
        key = self.key(topic)
        if self._whole_key_ttl:
            await asyncio.gather(
                self._kv.map_put_many(key, items, ttl=self._ttl),
                self._kv.expire(key, self._key_ttl),
            )
        else:
            await self._kv.map_put_many(key, items, ttl=self._ttl)

    async def items(self, topic: str) -> dict[str, str]:
        return await with_breaker(self._breaker, lambda: self._kv.map_items(self.key(topic)))

    async def shared(self, topic: str, after: int, read: Callable[[], Awaitable[None]]) -> None:
        """Run ``read`` for ``topic``, or wait for one already running that started after
        write number ``after`` completed."""
        running = self._reads.get(topic)
        if running is not None and running[0] >= after:
            await asyncio.shield(running[1])
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.writes, future)
        self._reads[topic] = entry
        try:
            await read()
        except BaseException as exc:
            future.set_exception(RuntimeError(f"presence: shared read failed: {exc!r}"))
            future.exception()  # marked retrieved: only waiters re-raise it
            raise
        else:
            future.set_result(None)
        finally:
            if self._reads.get(topic) is entry:
                del self._reads[topic]

    async def clear(self) -> int:
        """Delete every presence map (all instances' entries)."""
        return await with_breaker(self._breaker, lambda: self._kv.delete_prefix("presence:"))
