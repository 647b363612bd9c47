"""Wire side of :class:`~uwsx.features.sharded_bus.ShardedBus`: the publishing wrapper and
the receive path (validate, drop echoes, publish locally with ``relay=False``).

Anyone with write access to the backend can publish on a sharded channel, so an envelope is
accepted only when it is small enough, is JSON with a string ``instanceId``, and every topic it
carries is a valid bus topic that maps to the channel it arrived on (a hostile envelope cannot
inject topics of other channels). A valid message is then published only if its topic is
followed here *now*: a shard channel carries every topic mapped to it, and messages keep
arriving while an unsubscribe is in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from uwsx.features._envelope import EnvelopeValidator
from uwsx.features._json import loads
from uwsx.features._wrap import PlatformWrapper
from uwsx.metrics import MetricsLike
from uwsx.platform import Message, Platform

if TYPE_CHECKING:
    from uwsx.features.sharded_bus import ShardedBus

__all__ = ["Receiver", "ShardedPlatform"]

log = logging.getLogger("uwsx.sharded_bus")


class ShardedPlatform(PlatformWrapper):
    """``bus.wrap(platform)``: local delivery plus relays queued per shard channel."""

    def __init__(self, inner: Platform, bus: ShardedBus) -> None:
        super().__init__(inner)
        self._bus = bus

    def publish(self, topic: str, event: str, data: Any = None, *, relay: bool = True) -> bool:
        queued = self._bus._single(topic, event, data) if relay else None
        result = self.inner.publish(topic, event, data, relay=relay)
        if queued is not None:
            self._bus._enqueue(*queued)
        return result

    def batch(self, messages: Sequence[Message]) -> list[bool]:
        queued = [self._bus._single(m.topic, m.event, m.data) for m in messages if m.relay]
        results = self.inner.batch(messages)
        for item in queued:
            self._bus._enqueue(*item)
        return results

    def publish_batched(self, messages: Sequence[Message]) -> None:
        if not isinstance(messages, list | tuple) or not all(
            isinstance(m, Message) for m in messages
        ):
            raise TypeError("sharded bus: publish_batched requires a sequence of Message objects")
        if not messages:
            return
        queued = self._bus._grouped([m for m in messages if m.relay])
        self.inner.publish_batched(messages)
        for item in queued:
            self._bus._enqueue(*item)


class Receiver:
    """The subscription handler of one bus."""

    def __init__(self, bus: ShardedBus, validator: EnvelopeValidator, m: MetricsLike) -> None:
        self._bus = bus
        self._validator = validator
        self._map_topic = m.map_topic
        self._m_received = m.counter(
            "sharded_pubsub_messages_received_total", "Messages received", ("topic",)
        )
        self._m_echo = m.counter("sharded_pubsub_echo_suppressed_total", "Own envelopes dropped")
        self._m_parse = m.counter(
            "sharded_pubsub_parse_errors_total", "Rejected envelopes or batch entries"
        )

    def on_message(self, channel: str, raw: str) -> None:
        if not self._validator.accept_raw(raw):
            self._m_parse.inc()
            return
        try:
            envelope = loads(raw)
        except ValueError:
            self._m_parse.inc()
            return
        if not isinstance(envelope, dict) or not isinstance(envelope.get("instanceId"), str):
            self._m_parse.inc()
            return
        if envelope["instanceId"] == self._bus.instance_id:
            self._m_echo.inc()
            return
        target = self._bus.target
        if target is None:
            return
        try:
            self._deliver(target, channel, envelope)
        except Exception:
            self._m_parse.inc()
            log.exception("sharded bus: local delivery failed")

    def _valid(self, channel: str, topic: object, event: object) -> bool:
        if not self._validator.accept(topic, event):
            return False
        assert isinstance(topic, str)
        try:
            return self._bus.channel_for(topic) == channel
        except Exception:
            return False

    def _followed(self, topic: str) -> bool:
        if self._bus.follows(topic):
            return True
        self._bus._m_unfollowed.inc()
        return False

    def _deliver(self, target: Platform, channel: str, envelope: dict[str, Any]) -> None:
        batch = envelope.get("batch")
        if isinstance(batch, list):
            good = []
            for item in batch:
                entry = EnvelopeValidator.entry(item)
                if entry is None or not self._valid(channel, entry[0], entry[1]):
                    self._m_parse.inc()
                    continue
                if self._followed(entry[0]):
                    good.append(Message(entry[0], entry[1], entry[2], relay=False))
            if good:
                for m in good:
                    self._m_received.inc(topic=self._map_topic(m.topic))
                target.publish_batched(good)
            return
        topic, event = envelope.get("topic"), envelope.get("event")
        if not self._valid(channel, topic, event):
            self._m_parse.inc()
            return
        assert isinstance(topic, str)
        assert isinstance(event, str)
        if not self._followed(topic):
            return
        self._m_received.inc(topic=self._map_topic(topic))
        target.publish(topic, event, envelope.get("data"), relay=False)
