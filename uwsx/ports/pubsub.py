"""PubSub port: fire-and-forget channels, sharded channels and key-expiry events.

Specification
=============

**Delivery** is at most once. A message published on a channel reaches every subscription that
is registered for that channel *at the server* when the message is published; subscriptions
receive messages of one publisher in publish order. A message published by a backend client is
also delivered to that client's own subscriptions (features suppress their own echo).

**Handlers** are plain callables ``handler(channel, message)`` called on the event loop, one
message at a time, in order. A handler that raises is logged and the subscription carries on.
Channel names passed to handlers are the names the feature subscribed with (the backend's
``key_prefix`` is applied on the wire and removed again).

**Loss is never silent.** When a subscription's connection drops and is re-established, the
adapter resubscribes every channel and then calls ``on_loss(LossWindow)`` so the feature can
resynchronise (replay, re-fetch presence). A backend that cannot reconnect keeps retrying with
backoff; ``Subscription.healthy`` is False meanwhile.

**Sharded channels** (capability ``sharded_pubsub``): ``sharded=True`` publishes and subscribes
with Redis 7 SPUBLISH/SSUBSCRIBE semantics (a channel lives on the shard owning its hash slot).
Without the capability, ``sharded=True`` raises :class:`uwsx.errors.UnsupportedBackendError`.

**Key-expiry events** (capability ``key_expiry_events``): ``subscribe_expired(prefix, handler)``
calls ``handler(key)`` when a whole KV key starting with ``prefix`` expires (individual map
fields expiring do not count).

**Size.** ``max_message_bytes`` is the largest UTF-8 message the backend carries (Postgres
NOTIFY: under 8000 bytes) or None. Larger messages raise ``ValueError`` before sending.

``publish`` is one round trip; ``publish_many`` sends all messages in one round trip, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["ExpiryHandler", "LossHandler", "LossWindow", "MessageHandler", "PubSub", "Subscription"]


@dataclass(frozen=True, slots=True)
class LossWindow:
    """Wall-clock seconds between which messages may have been missed."""

    started: float
    ended: float


MessageHandler = Callable[[str, str], None]
ExpiryHandler = Callable[[str], None]
LossHandler = Callable[[LossWindow], None]


@runtime_checkable
class Subscription(Protocol):
    """A live set of channels delivering to one handler."""

    @property
    def channels(self) -> frozenset[str]:
        """The channels currently subscribed."""
        ...

    @property
    def healthy(self) -> bool:
        """False while the underlying connection is down (messages may be missed)."""
        ...

    async def add(self, channels: Iterable[str]) -> None:
        """Subscribe more channels (one round trip; no-op for channels already present)."""
        ...

    async def remove(self, channels: Iterable[str]) -> None:
        """Unsubscribe channels (no-op for channels not present)."""
        ...

    async def close(self) -> None:
        """Unsubscribe everything and release the connection. Idempotent."""
        ...


@runtime_checkable
class PubSub(Protocol):
    """Channels (see the module docstring)."""

    @property
    def max_message_bytes(self) -> int | None: ...

    async def publish(self, channel: str, message: str, *, sharded: bool = False) -> None:
        """Publish one message."""
        ...

    async def publish_many(
        self, messages: Sequence[tuple[str, str]], *, sharded: bool = False
    ) -> None:
        """Publish ``(channel, message)`` pairs in order, in one round trip."""
        ...

    async def subscribe(
        self,
        channels: Iterable[str],
        handler: MessageHandler,
        *,
        sharded: bool = False,
        on_loss: LossHandler | None = None,
    ) -> Subscription:
        """Subscribe ``channels`` (may be empty, to ``add`` later); returns once the server
        confirmed the subscription."""
        ...

    async def subscribe_expired(
        self, prefix: str, handler: ExpiryHandler, *, on_loss: LossHandler | None = None
    ) -> Subscription:
        """Deliver the names of expiring KV keys that start with ``prefix``."""
        ...
