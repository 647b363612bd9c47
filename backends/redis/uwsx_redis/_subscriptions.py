"""The subscription objects the pub/sub port hands out (:class:`uwsx.ports.Subscription`):
they keep their channel set and handler, and hear about loss windows from the hub."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from uwsx.ports.checks import check_key
from uwsx.ports.pubsub import ExpiryHandler, LossHandler, LossWindow, MessageHandler

if TYPE_CHECKING:
    from uwsx_redis.pubsub import RedisPubSub

__all__ = ["RedisExpirySubscription", "RedisSubscription", "decode"]

log = logging.getLogger("uwsx.redis.pubsub")


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _report(on_loss: LossHandler | None, window: LossWindow, what: str) -> None:
    """Tell a subscription about a loss window; never silently: log without a handler."""
    if on_loss is None:
        log.warning(
            "pub/sub messages (%s) may have been missed between %.3f and %.3f; "
            "the subscription has no on_loss handler",
            what,
            window.started,
            window.ended,
        )
        return
    try:
        on_loss(window)
    except Exception:
        log.exception("pub/sub on_loss handler failed")


class RedisSubscription:
    """Channels delivered to one handler (see :class:`uwsx.ports.Subscription`)."""

    def __init__(
        self,
        hub: RedisPubSub,
        handler: MessageHandler,
        *,
        sharded: bool,
        on_loss: LossHandler | None,
    ) -> None:
        self._hub = hub
        self._handler = handler
        self.sharded = sharded
        self.on_loss = on_loss
        self._channels: set[str] = set()
        self._closed = False

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    @property
    def healthy(self) -> bool:
        return not self._closed and self._hub.connected(self)

    async def add(self, channels: Iterable[str]) -> None:
        if self._closed:
            raise RuntimeError("the subscription is closed")
        wanted = [check_key(c, "channel") for c in channels]
        new = [c for c in dict.fromkeys(wanted) if c not in self._channels]
        if new:
            await self._hub.attach(self, new)

    async def remove(self, channels: Iterable[str]) -> None:
        gone = [c for c in dict.fromkeys(channels) if c in self._channels]
        if gone:
            await self._hub.detach(self, gone)

    async def close(self) -> None:
        if self._closed:
            return
        await self.remove(list(self._channels))
        self._closed = True
        self._hub.forget(self)

    def deliver(self, channel: str, message: str) -> None:
        if self._closed or channel not in self._channels:
            return
        try:
            self._handler(channel, message)
        except Exception:
            log.exception("pub/sub handler failed on channel %r", channel)

    def lost(self, window: LossWindow) -> None:
        if not self._closed:
            _report(self.on_loss, window, f"{len(self._channels)} channel(s)")


class RedisExpirySubscription:
    """Names of expiring KV keys under a prefix (keyevent ``expired`` notifications)."""

    def __init__(
        self, hub: RedisPubSub, prefix: str, handler: ExpiryHandler, on_loss: LossHandler | None
    ) -> None:
        self._hub = hub
        self.prefix = prefix
        self._handler = handler
        self.on_loss = on_loss
        self._closed = False

    @property
    def channels(self) -> frozenset[str]:
        return frozenset()

    @property
    def healthy(self) -> bool:
        return not self._closed and self._hub.expiry_connected()

    async def add(self, channels: Iterable[str]) -> None:
        raise TypeError("an expiry subscription has no channels")

    async def remove(self, channels: Iterable[str]) -> None:
        raise TypeError("an expiry subscription has no channels")

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._hub.forget_expiry(self)

    def expired(self, key: str) -> None:
        if self._closed or not key.startswith(self.prefix):
            return
        try:
            self._handler(key)
        except Exception:
            log.exception("expiry handler failed for key %r", key)

    def lost(self, window: LossWindow) -> None:
        if not self._closed:
            _report(self.on_loss, window, f"key expiry events under {self.prefix!r}")
