"""Cross-instance presence events and key-expiry notices (:class:`~uwsx.features.presence.
Presence`).

One subscription carries the channels ``presence:events:<topic>`` of every topic with a local
audience; channels are added and removed under a lock so a join that needs a channel and a
leave that releases it cannot interleave badly. Envelopes ``{instanceId, topic, event,
payload: {key, data}}`` (event ``join``, ``leave`` or ``updated``) are validated before use
(the original trusted them): size, JSON object, string ``instanceId``, the topic of the
channel, a known event and a string key. Own envelopes are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uwsx.features._envelope import DEFAULT_MAX_ENVELOPE_BYTES, EnvelopeValidator
from uwsx.features._json import dumps, loads
from uwsx.ports.pubsub import LossHandler, PubSub, Subscription
from uwsx.reliability.breaker import CircuitBreaker, with_breaker

__all__ = ["EVENTS_PREFIX", "EventChannels", "Inbound", "parse_event"]

log = logging.getLogger("uwsx.presence")

EVENTS_PREFIX = "presence:events:"
_EVENTS = frozenset({"join", "leave", "updated"})

#: ``(topic, event, user key, data)`` of a valid inbound event.
Inbound = tuple[str, str, str, Any]


def parse_event(channel: str, raw: str, validator: EnvelopeValidator) -> tuple[str, Inbound] | None:
    """``(sender instance id, event)`` from ``raw``, or None when it is invalid."""
    if not channel.startswith(EVENTS_PREFIX) or not validator.accept_raw(raw):
        return None
    try:
        envelope = loads(raw)
    except ValueError:
        return None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("instanceId"), str):
        return None
    topic, event, payload = envelope.get("topic"), envelope.get("event"), envelope.get("payload")
    if topic != channel[len(EVENTS_PREFIX) :] or event not in _EVENTS:
        return None
    if not isinstance(payload, dict):
        return None
    key = payload.get("key")
    if not isinstance(key, str) or not 1 <= len(key) <= 1024:
        return None
    assert isinstance(topic, str)
    assert isinstance(event, str)
    return envelope["instanceId"], (topic, event, key, payload.get("data"))


class EventChannels:
    """The event-channel subscription of one presence object."""

    def __init__(
        self,
        pubsub: PubSub,
        *,
        instance_id: str,
        wanted: Callable[[str], bool],
        on_event: Callable[[Inbound], None],
        on_loss: LossHandler,
        breaker: CircuitBreaker | None,
        max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
    ) -> None:
        self._pubsub = pubsub
        self._instance_id = instance_id
        self._wanted = wanted
        self._on_event = on_event
        self._on_loss = on_loss
        self._breaker = breaker
        self._validator = EnvelopeValidator(max_bytes=max_envelope_bytes)
        self._lock = asyncio.Lock()
        self._subscription: Subscription | None = None
        self._channels: set[str] = set()
        self.rejected = 0

    @staticmethod
    def channel(topic: str) -> str:
        return EVENTS_PREFIX + topic

    async def want(self, topic: str) -> None:
        """Make sure ``topic``'s channel is subscribed (raises when it cannot be)."""
        channel = self.channel(topic)
        if channel in self._channels:
            return
        async with self._lock:
            if channel in self._channels or not self._wanted(topic):
                return
            if self._subscription is None:
                self._subscription = await with_breaker(
                    self._breaker,
                    lambda: self._pubsub.subscribe([], self._handle, on_loss=self._on_loss),
                )
            subscription = self._subscription
            await with_breaker(self._breaker, lambda: subscription.add([channel]))
            self._channels.add(channel)

    async def release(self, topic: str) -> None:
        """Unsubscribe ``topic``'s channel unless it is wanted again (errors are logged)."""
        channel = self.channel(topic)
        if channel not in self._channels:
            return
        async with self._lock:
            if channel not in self._channels or self._wanted(topic) or self._subscription is None:
                return
            try:
                await self._subscription.remove([channel])
            except Exception as exc:
                log.warning("presence: unsubscribing %r failed: %s", channel, exc)
                return
            self._channels.discard(channel)

    async def release_all(self) -> None:
        """Drop every channel but keep the subscription (``Presence.clear``)."""
        async with self._lock:
            channels, self._channels = sorted(self._channels), set()
            if channels and self._subscription is not None:
                try:
                    await self._subscription.remove(channels)
                except Exception as exc:
                    log.warning("presence: unsubscribing failed: %s", exc)

    async def publish(self, topic: str, event: str, key: str, data: Any) -> None:
        envelope = dumps(
            {
                "instanceId": self._instance_id,
                "topic": topic,
                "event": event,
                "payload": {"key": key, "data": data},
            }
        )
        try:
            await self._pubsub.publish(self.channel(topic), envelope)
        except Exception as exc:
            log.warning("presence: relaying %s of %r failed: %s", event, topic, exc)

    def _handle(self, channel: str, raw: str) -> None:
        parsed = parse_event(channel, raw, self._validator)
        if parsed is None:
            self.rejected += 1
            return
        sender, event = parsed
        if sender == self._instance_id:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("presence: handling a remote event failed")

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        self._channels.clear()
        if subscription is not None:
            try:
                await subscription.close()
            except Exception as exc:
                log.debug("presence: closing the event subscription failed: %s", exc)
