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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from uwsx.features._envelope import DEFAULT_MAX_ENVELOPE_BYTES, EnvelopeValidator
from uwsx.features._json import dumps, loads
from uwsx.ports.pubsub import LossHandler, PubSub, Subscription
from uwsx.reliability.breaker import CircuitBreaker, with_breaker

__all__ = ["EVENTS_PREFIX", "EventChannels", "Inbound", "Outbound", "parse_event"]

log = logging.getLogger("uwsx.presence")

EVENTS_PREFIX = "presence:events:"
_EVENTS = frozenset({"join", "leave", "updated"})

#: ``(topic, event, user key, data)`` of a valid inbound event.
Inbound = tuple[str, str, str, Any]
#: ``(topic, event, user key, data)`` of an event to announce.
Outbound = tuple[str, str, str, Any]


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


class _Batches:
    """Requests that arrive while a batch is pending join it: one ``run`` per batch, under
    ``lock``, and every request of the batch finishes with it in the same tick (a mass
    disconnect's thousand unsubscribes are two calls, not a thousand turns of the lock)."""

    def __init__(self, lock: asyncio.Lock, run: Callable[[set[str]], Awaitable[None]]) -> None:
        self._lock = lock
        self._run = run
        self._pending: set[str] = set()
        #: resolves when the pending batch was run (True: it was not, submit again)
        self._done: asyncio.Future[bool] | None = None

    async def submit(self, items: list[str]) -> None:
        """Run ``items`` in a batch; raises what that batch's run raised."""
        while True:
            self._pending.update(items)
            done = self._done
            if done is not None:
                if not await asyncio.shield(done):
                    return
                continue
            done = self._done = asyncio.get_running_loop().create_future()
            try:
                async with self._lock:
                    batch, self._pending, self._done = self._pending, set(), None
                    await self._run(batch)
            except asyncio.CancelledError:
                if self._done is done:
                    self._done = None
                done.set_result(True)  # the others submit again
                raise
            except BaseException as exc:
                done.set_exception(exc)
                done.exception()  # retrieved: only the waiters re-raise it
                raise
            done.set_result(False)
            return


class EventChannels:
    """The event-channel subscription of one presence object."""

    def __init__(
        self,
        pubsub: PubSub,
        *,
        instance_id: str,
        wanted: Callable[[str], bool],
        on_event: Callable[[str, Inbound], None],
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
        self._subscribes = _Batches(self._lock, self._subscribe)
        self._unsubscribes = _Batches(self._lock, self._unsubscribe)
        self.rejected = 0

    @staticmethod
    def channel(topic: str) -> str:
        return EVENTS_PREFIX + topic

    async def want(self, topic: str) -> None:
        """Make sure ``topic``'s channel is subscribed (raises when it cannot be). Topics
        wanted while a subscribe is pending or in flight go out together in the next one."""
        if self.channel(topic) not in self._channels:
            await self._subscribes.submit([topic])

    async def _subscribe(self, topics: set[str]) -> None:
        batch = [self.channel(t) for t in topics if self._wanted(t)]
        batch = [c for c in batch if c not in self._channels]
        if not batch:
            return
        if self._subscription is None:
            self._subscription = await with_breaker(
                self._breaker,
                lambda: self._pubsub.subscribe([], self._handle, on_loss=self._on_loss),
            )
        subscription = self._subscription
        await with_breaker(self._breaker, lambda: subscription.add(batch))
        self._channels.update(batch)

    async def release(self, topic: str) -> None:
        """Unsubscribe ``topic``'s channel unless it is wanted again (errors are logged)."""
        await self.release_many([topic])

    async def release_many(self, topics: Iterable[str]) -> None:
        """Unsubscribe the channels of ``topics`` that are not wanted again, in one call
        shared with every release requested while another one is pending or in flight."""
        pending = [t for t in topics if self.channel(t) in self._channels]
        if pending:
            await self._unsubscribes.submit(pending)

    async def _unsubscribe(self, topics: set[str]) -> None:
        channels = [
            self.channel(t)
            for t in topics
            if self.channel(t) in self._channels and not self._wanted(t)
        ]
        if not channels or self._subscription is None:
            return
        try:
            await self._subscription.remove(channels)
        except Exception as exc:
            log.warning("presence: unsubscribing %d channels failed: %s", len(channels), exc)
            return
        self._channels.difference_update(channels)

    async def release_all(self) -> None:
        """Drop every channel but keep the subscription (``Presence.clear``)."""
        async with self._lock:
            channels, self._channels = sorted(self._channels), set()
            if channels and self._subscription is not None:
                try:
                    await self._subscription.remove(channels)
                except Exception as exc:
                    log.warning("presence: unsubscribing failed: %s", exc)

    def _envelope(self, topic: str, event: str, key: str, data: Any) -> str:
        return dumps(
            {
                "instanceId": self._instance_id,
                "topic": topic,
                "event": event,
                "payload": {"key": key, "data": data},
            }
        )

    async def publish(self, topic: str, event: str, key: str, data: Any) -> None:
        """Announce one event; failures are logged (receivers repair by reconciling)."""
        envelope = self._envelope(topic, event, key, data)
        try:
            await self._pubsub.publish(self.channel(topic), envelope)
        except Exception as exc:
            log.warning("presence: relaying %s of %r failed: %s", event, topic, exc)

    async def publish_many(self, events: Sequence[Outbound]) -> None:
        """Announce several events in one port call (one round trip); failures are logged."""
        if len(events) == 1:
            await self.publish(*events[0])
            return
        if not events:
            return
        messages = [(self.channel(t), self._envelope(t, e, k, d)) for t, e, k, d in events]
        try:
            await self._pubsub.publish_many(messages)
        except Exception as exc:
            log.warning("presence: relaying %d events failed: %s", len(events), exc)

    def _handle(self, channel: str, raw: str) -> None:
        parsed = parse_event(channel, raw, self._validator)
        if parsed is None:
            self.rejected += 1
            return
        sender, event = parsed
        if sender == self._instance_id:
            return
        try:
            self._on_event(sender, event)
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
