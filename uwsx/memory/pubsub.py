"""``MemoryPubSub``: channels, sharded channels and key-expiry events in one interpreter.

Messages are delivered asynchronously (never inside the publisher's call), per subscription in
publish order, like a server would.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Sequence

from uwsx import _runtime
from uwsx._runtime.clock import wait_event
from uwsx.memory.store import MemoryStore
from uwsx.ports.checks import check_key, check_value
from uwsx.ports.pubsub import ExpiryHandler, LossHandler, MessageHandler

__all__ = ["MemoryPubSub", "MemorySubscription"]

log = logging.getLogger("uwsx.memory")


class MemorySubscription:
    """Channels of one subscriber; a queue drained on the event loop in order."""

    def __init__(
        self,
        pubsub: MemoryPubSub,
        handler: MessageHandler,
        *,
        sharded: bool,
        on_loss: LossHandler | None,
    ) -> None:
        self._pubsub = pubsub
        self._handler = handler
        self._sharded = sharded
        self.on_loss = on_loss
        self._channels: set[str] = set()
        self._queue: deque[tuple[str, str]] = deque()
        self._scheduled = False
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self.id = pubsub.store.serial()

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    @property
    def healthy(self) -> bool:
        return not self._closed

    def deliver(self, channel: str, message: str) -> None:
        if self._closed:
            return
        self._queue.append((channel, message))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        while self._queue and not self._closed:
            channel, message = self._queue.popleft()
            try:
                self._handler(channel, message)
            except Exception:
                log.exception("pub/sub handler failed on channel %r", channel)

    async def add(self, channels: Iterable[str]) -> None:
        for channel in channels:
            check_key(channel, "channel")
            if channel not in self._channels and not self._closed:
                self._channels.add(channel)
                self._pubsub.attach(self, channel, self._sharded)

    async def remove(self, channels: Iterable[str]) -> None:
        for channel in channels:
            if channel in self._channels:
                self._channels.discard(channel)
                self._pubsub.detach(self, channel, self._sharded)

    async def close(self) -> None:
        if self._closed:
            return
        await self.remove(list(self._channels))
        self._closed = True
        self._queue.clear()
        self._pubsub.forget(self)


class MemoryExpirySubscription:
    """Delivers expired key names under a prefix."""

    def __init__(self, pubsub: MemoryPubSub, prefix: str, handler: ExpiryHandler) -> None:
        self._pubsub = pubsub
        self._prefix = prefix
        self._handler = handler
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self.id = pubsub.store.serial()

    @property
    def channels(self) -> frozenset[str]:
        return frozenset()

    @property
    def healthy(self) -> bool:
        return not self._closed

    def on_expired(self, full_key: str) -> None:
        strip = self._pubsub.prefix
        if self._closed or not full_key.startswith(strip + self._prefix):
            return
        self._loop.call_soon(self._call, full_key[len(strip) :])

    def _call(self, key: str) -> None:
        if self._closed:
            return
        try:
            self._handler(key)
        except Exception:
            log.exception("expiry handler failed for key %r", key)

    async def add(self, channels: Iterable[str]) -> None:
        raise TypeError("an expiry subscription has no channels")

    async def remove(self, channels: Iterable[str]) -> None:
        raise TypeError("an expiry subscription has no channels")

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pubsub.store.expiry_listeners.pop(self.id, None)
            self._pubsub.forget(self)


class MemoryPubSub:
    """The PubSub port on a memory store; ``prefix`` namespaces channels."""

    def __init__(self, store: MemoryStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self._subs: dict[int, MemorySubscription | MemoryExpirySubscription] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._tasks = _runtime.current().task_group("memory-pubsub")
        self._wake: asyncio.Event | None = None

    @property
    def max_message_bytes(self) -> int | None:
        return None

    def attach(self, sub: MemorySubscription, channel: str, sharded: bool) -> None:
        self.store.channels.setdefault((sharded, self.prefix + channel), {})[sub.id] = sub

    def detach(self, sub: MemorySubscription, channel: str, sharded: bool) -> None:
        key = (sharded, self.prefix + channel)
        subs = self.store.channels.get(key)
        if subs is not None:
            subs.pop(sub.id, None)
            if not subs:
                del self.store.channels[key]

    def forget(self, sub: MemorySubscription | MemoryExpirySubscription) -> None:
        self._subs.pop(sub.id, None)

    def _fanout(self, channel: str, message: str, sharded: bool) -> None:
        subs = self.store.channels.get((sharded, self.prefix + channel))
        if subs:
            for sub in list(subs.values()):
                assert isinstance(sub, MemorySubscription)
                sub.deliver(channel, message)

    async def publish(self, channel: str, message: str, *, sharded: bool = False) -> None:
        self._fanout(check_key(channel, "channel"), check_value(message, "message"), sharded)

    async def publish_many(
        self, messages: Sequence[tuple[str, str]], *, sharded: bool = False
    ) -> None:
        checked = [(check_key(c, "channel"), check_value(m, "message")) for c, m in messages]
        for channel, message in checked:
            self._fanout(channel, message, sharded)

    async def subscribe(
        self,
        channels: Iterable[str],
        handler: MessageHandler,
        *,
        sharded: bool = False,
        on_loss: LossHandler | None = None,
    ) -> MemorySubscription:
        if not callable(handler):
            raise TypeError("handler must be callable")
        wanted = [check_key(c, "channel") for c in channels]
        sub = MemorySubscription(self, handler, sharded=sharded, on_loss=on_loss)
        self._subs[sub.id] = sub
        await sub.add(wanted)
        return sub

    async def subscribe_expired(
        self, prefix: str, handler: ExpiryHandler, *, on_loss: LossHandler | None = None
    ) -> MemoryExpirySubscription:
        if not callable(handler):
            raise TypeError("handler must be callable")
        sub = MemoryExpirySubscription(self, prefix, handler)
        self._subs[sub.id] = sub
        self.store.expiry_listeners[sub.id] = sub.on_expired
        self._ensure_watcher()
        return sub

    # -- active expiry: wake at the next key deadline while anyone listens -----------
    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._wake = asyncio.Event()
            self.store.deadline_listeners[id(self)] = lambda _deadline: self._poke()
            self._watcher = self._tasks.spawn(self._watch(), name="uwsx-memory-expiry")

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _watch(self) -> None:
        assert self._wake is not None
        clock = self.store.clock
        while self.store.expiry_listeners:
            self.store.expire_due()
            deadline = self.store.next_deadline()
            self._wake.clear()
            if deadline is None:
                await self._wake.wait()
                continue
            await wait_event(self._wake, max(0.0, deadline - self.store.now()), clock)

    async def close(self) -> None:
        for sub in list(self._subs.values()):
            await sub.close()
        self.store.deadline_listeners.pop(id(self), None)
        await self._tasks.aclose()
        self._watcher = None
