"""Storage side of :class:`~uwsx.features.presence.Presence`: one KV map per topic.

Every operation here is one atomic port call: ``put`` (write this instance's field for a user
and count the user's other holders: 0 means "first holder"), ``remove`` (delete it and report
whether it was the user's last holder), ``refresh`` (re-put every local field of a topic with
a fresh deadline), ``items``. :meth:`PresenceStore.put_and_read` issues a join's ``put``, its
snapshot read and anything else the caller passes in one event-loop tick, so an adapter that
pipelines a tick's operations sends them as one round trip; pipelined in issue order, the read
observes the write. Where an adapter does not keep that order (a connection pool), the read is
checked for the write and repeated after it when it missed it.

Ordering of writes:

* the heartbeat's refresh is exclusive with every other write (:class:`WriteGate`), so a
  refresh never re-creates a field a leave just removed, nor reverts data a leave restored;
  joins, leaves and rollbacks share the gate and run concurrently with one another (a mass
  disconnect is one pipeline, not one round trip per user);
* writes of one (topic, user) run in issue order (:meth:`PresenceStore.ordered`), on every
  backend, so a removal and a later re-put of the same field cannot swap.

Other snapshot reads of one topic (syncs, heartbeats) are shared between concurrent callers,
but only by callers whose own write had completed before the shared read started (so a reader
always sees its own write); a join reads in its own write's tick instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from uwsx._runtime import buggify
from uwsx.features.presence_data import encode_entry, field_name, user_prefix
from uwsx.ports.kv import KV, MapRemoval
from uwsx.reliability.breaker import CircuitBreaker, with_breaker

__all__ = ["TOPIC_KEY_PREFIX", "PresenceStore", "PutRead", "WriteGate"]

TOPIC_KEY_PREFIX = "presence:topic:"


@dataclass(frozen=True, slots=True)
class PutRead:
    """Outcome of :meth:`PresenceStore.put_and_read`: ``others`` is None when the write
    failed (it may still have applied if ``error`` is indeterminate); ``items`` is the
    snapshot (empty on any failure)."""

    others: int | None
    items: dict[str, str]
    error: BaseException | None


class WriteGate:
    """Many shared holders or one exclusive holder; a waiting exclusive holder goes first
    (the heartbeat is never starved by a stream of leaves). Entering an idle gate does not
    yield to the event loop, so operations issued right after stay in the caller's tick.
    Leaving never awaits (safe while a crashed instance's coroutines are being closed)."""

    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._queued = 0
        self._waiters: list[asyncio.Future[None]] = []

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _changed(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    async def acquire_shared(self) -> None:
        while self._exclusive or self._queued:
            await self._changed()
        self._shared += 1

    def release_shared(self) -> None:
        self._shared -= 1
        if not self._shared:
            self._wake()

    async def acquire_exclusive(self) -> None:
        self._queued += 1
        try:
            while self._exclusive or self._shared:
                await self._changed()
        finally:
            self._queued -= 1
            self._wake()  # shared waiters held back by this one may go if it gave up
        self._exclusive = True

    def release_exclusive(self) -> None:
        self._exclusive = False
        self._wake()

    def exclusive(self) -> _Exclusive:
        """``async with gate.exclusive():``"""
        return _Exclusive(self)


class _Exclusive:
    __slots__ = ("_gate",)

    def __init__(self, gate: WriteGate) -> None:
        self._gate = gate

    async def __aenter__(self) -> None:
        await self._gate.acquire_exclusive()

    async def __aexit__(self, *exc: object) -> None:
        self._gate.release_exclusive()


class _Ordered:
    """See :meth:`PresenceStore.ordered`."""

    __slots__ = ("_done", "_slot", "_store")

    def __init__(self, store: PresenceStore, slot: tuple[str, str]) -> None:
        self._store = store
        self._slot = slot
        self._done: asyncio.Future[None] | None = None

    async def __aenter__(self) -> None:
        last = self._store._last
        previous = last.get(self._slot)
        done = self._done = asyncio.get_running_loop().create_future()
        last[self._slot] = done
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await self._store.gate.acquire_shared()
        except BaseException:
            self._finish()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._store.gate.release_shared()
        self._finish()

    def _finish(self) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        done.set_result(None)
        last = self._store._last
        if last.get(self._slot) is done:
            del last[self._slot]


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
        self.gate = WriteGate()
        #: Completed writes so far (orders writes before shared reads).
        self.writes = 0
        self._reads: dict[str, tuple[int, asyncio.Future[None]]] = {}
        self._last: dict[tuple[str, str], asyncio.Future[None]] = {}

    @staticmethod
    def key(topic: str) -> str:
        return TOPIC_KEY_PREFIX + topic

    def field(self, user_key: str) -> str:
        """This instance's field name for ``user_key``."""
        return field_name(user_key, self._instance_id)

    def guard(self) -> None:
        """Raise :class:`~uwsx.errors.CircuitBrokenError` unless a guarded call may start
        (takes the probe when probing: :meth:`settle` must follow)."""
        if self._breaker is not None:
            self._breaker.guard()

    def settle(self, error: BaseException | None) -> None:
        """Record the outcome of the calls :meth:`guard` let through."""
        if self._breaker is None:
            return
        if error is None:
            self._breaker.success()
        elif not isinstance(error, asyncio.CancelledError):
            self._breaker.failure(error)

    def ordered(self, topic: str, user_key: str) -> _Ordered:
        """``async with store.ordered(topic, user_key):`` write after the previous write of
        that field finished, sharing the gate with every other non-refresh write. Free (no
        yield to the loop) when nothing is pending."""
        return _Ordered(self, (topic, user_key))

    def _map_put(self, topic: str, user_key: str, data: Any, ts: float) -> Awaitable[int]:
        return self._kv.map_put(
            self.key(topic),
            self.field(user_key),
            encode_entry(data, ts),
            ttl=self._ttl,
            prefix=user_prefix(user_key),
        )

    async def put_and_read(
        self, topic: str, user_key: str, data: Any, ts: float, alongside: Awaitable[None]
    ) -> PutRead:
        """Write this instance's field for ``user_key``, read the topic's map and await
        ``alongside``, all issued in this tick in that order. The snapshot is taken after the
        write. The caller has passed :meth:`guard`; the outcome is recorded here, and a failure
        is returned (``alongside`` runs regardless), not raised.
        """
        key = self.key(topic)
        calls: list[Awaitable[Any]] = [self._map_put(topic, user_key, data, ts)]
        if self._whole_key_ttl:
            calls.append(self._kv.expire(key, self._key_ttl))
        calls += [self._kv.map_items(key), alongside]
        try:
            results = await asyncio.gather(*calls, return_exceptions=True)
        except BaseException as exc:  # cancelled
            self.settle(exc)
            raise
        failed = [r for r in results[:-1] if isinstance(r, BaseException)]
        self.settle(failed[0] if failed else None)
        others, items = results[0], results[-2]
        if isinstance(others, BaseException):
            return PutRead(None, {}, others)
        self.writes += 1
        if failed:
            return PutRead(others, {}, failed[0])
        assert isinstance(items, dict)
        missed = items.get(self.field(user_key)) != encode_entry(data, ts)
        # ``presence.snapshot_reread``: the pooled path, as if the read had overtaken the write.
        if missed or buggify("presence.snapshot_reread"):
            # This adapter did not apply the tick's operations in order (a pooled backend):
            # read again now that the write is known to be done.
            try:
                items = await self.items(topic)
            except Exception as exc:
                return PutRead(others, {}, exc)
        return PutRead(others, items, None)

    async def put(
        self, topic: str, user_key: str, data: Any, ts: float, *, guard: bool = True
    ) -> int:
        """Write this instance's field for ``user_key``; returns the user's other holders."""

        def call() -> Awaitable[int]:
            return self._map_put(topic, user_key, data, ts)

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
            self.key(topic), self.field(user_key), prefix=user_prefix(user_key)
        )

    async def refresh(self, topic: str, held: Mapping[str, tuple[Any, float]]) -> None:
        """Re-put every held user of ``topic`` with a fresh deadline (values unchanged)."""
        items = {self.field(k): encode_entry(d, ts) for k, (d, ts) in held.items()}
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
        # ``presence.read_unshared``: the shared read is missed (it finished the same tick).
        if running is not None and not buggify("presence.read_unshared") and running[0] >= after:
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
