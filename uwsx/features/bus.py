"""``PubSubBus``: make ``platform.publish`` cluster-wide over one shared channel.

Guarantee: a message published through ``bus.wrap(platform)`` reaches local subscribers at once
and, at most once, every other *active* instance's local subscribers (pub/sub is fire and forget;
use :class:`~uwsx.ReplayBuffer` when a client must not miss messages). Messages published in one
event-loop tick leave in one round trip, in order; ``publish_batched`` travels as one envelope.
An instance never re-delivers its own envelopes (echo suppression by instance id), and anything
received is validated (size, JSON shape, topic/event syntax, system-topic policy) before it
reaches local subscribers; rejects are dropped and counted, never crash the receive loop.

Invariants (checked by the simulator's bus checker, ``uwsx_sim`` BUS-1..BUS-4):

* BUS-1 no phantom: every delivered message was published by some instance.
* BUS-2 no duplicate: one envelope is delivered at most once per receiving instance.
* BUS-3 order: messages of one publisher on one topic arrive in publish order.
* BUS-4 after a partition heals and the subscription is re-established, new publishes arrive.

Failure behaviour: while the circuit breaker is open, publishes are delivered locally and the
relay is skipped and counted (``pubsub_relay_dropped_total``); a relay that fails counts as a
breaker failure. When the subscription's connection drops, messages in the gap are lost: the bus
logs it, counts ``pubsub_loss_windows_total`` and publishes a local ``loss`` event on the system
channel so clients can resynchronise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from uwsx import _runtime
from uwsx.connect import require
from uwsx.errors import CircuitBrokenError
from uwsx.features._envelope import DEFAULT_MAX_ENVELOPE_BYTES, EnvelopeValidator
from uwsx.features._json import dumps, loads
from uwsx.features._wrap import PlatformWrapper
from uwsx.metrics import NULL_METRICS, MetricsLike
from uwsx.platform import Connection, Message, Platform
from uwsx.ports.backend import Backend
from uwsx.ports.pubsub import LossWindow, PubSub, Subscription
from uwsx.reliability.breaker import BreakerState, CircuitBreaker

__all__ = ["BusHooks", "PubSubBus"]

log = logging.getLogger("uwsx.bus")


class _BusPlatform(PlatformWrapper):
    """``bus.wrap(platform)``: local delivery plus a queued relay."""

    def __init__(self, inner: Platform, bus: PubSubBus) -> None:
        super().__init__(inner)
        self._bus = bus

    def publish(self, topic: str, event: str, data: Any = None, *, relay: bool = True) -> bool:
        envelope = self._bus._single(topic, event, data) if relay else None
        result = self.inner.publish(topic, event, data, relay=relay)
        if envelope is not None:
            self._bus._enqueue(envelope, 1)
        return result

    def batch(self, messages: Sequence[Message]) -> list[bool]:
        envelopes = [self._bus._single(m.topic, m.event, m.data) for m in messages if m.relay]
        results = self.inner.batch(messages)
        for envelope in envelopes:
            self._bus._enqueue(envelope, 1)
        return results

    def publish_batched(self, messages: Sequence[Message]) -> None:
        if not _is_message_list(messages):
            raise TypeError("pubsub bus: publish_batched requires a sequence of Message objects")
        if not messages:
            return
        relayable = [m for m in messages if m.relay]
        envelope = self._bus._batch(relayable) if relayable else None
        self.inner.publish_batched(messages)
        if envelope is not None:
            self._bus._enqueue(envelope, len(relayable))


class BusHooks:
    """Server hooks; each works when taken off the object (``open = bus.hooks.open``)."""

    def __init__(self, bus: PubSubBus) -> None:
        self._bus = bus

    async def open(self, conn: Connection, *, platform: Platform | None = None) -> None:
        """Subscribe the connection to the system channel and activate the bus."""
        if platform is None:
            return
        bus = self._bus
        if bus.system_channel is not None:
            platform.subscribe(conn, bus.system_channel)
        await bus.activate(platform)


class PubSubBus:
    """Relay local publishes to every instance through one backend channel.

    :param backend: a backend with the ``pubsub`` port.
    :param channel: the shared channel (namespaced by the backend's key prefix).
    :param system_channel: local topic for ``degraded``/``recovered``/``loss`` events (None: off).
    :param on_degraded: called when the breaker leaves healthy.
    :param on_recovered: called when it becomes healthy again.
    :param max_envelope_bytes: largest received envelope accepted.
    :param allow_system_topics: accept ``__`` topics from the bus (the system channel always is).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        channel: str = "uws:pubsub",
        system_channel: str | None = "__realtime",
        on_degraded: Callable[[], None] | None = None,
        on_recovered: Callable[[], None] | None = None,
        max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        allow_system_topics: bool = False,
        breaker: CircuitBreaker | None = None,
        metrics: MetricsLike | None = None,
    ) -> None:
        require(backend, "PubSubBus", ports=("pubsub",))
        if not isinstance(channel, str) or not channel:
            raise ValueError("channel must be a non-empty string")
        if system_channel is not None and (
            not isinstance(system_channel, str) or not system_channel
        ):
            raise ValueError("system_channel must be a non-empty string or None")
        for name, cb in (("on_degraded", on_degraded), ("on_recovered", on_recovered)):
            if cb is not None and not callable(cb):
                raise TypeError(f"{name} must be callable")
        pubsub = backend.pubsub
        assert pubsub is not None
        self._pubsub: PubSub = pubsub
        self.channel = channel
        self.system_channel = system_channel
        self._on_degraded = on_degraded
        self._on_recovered = on_recovered
        self._validator = EnvelopeValidator(
            max_bytes=max_envelope_bytes,
            allow_system_topics=allow_system_topics,
            allowed_system_topics=() if system_channel is None else (system_channel,),
        )
        self._breaker = breaker
        rt = _runtime.current()
        self._clock = rt.clock
        self.instance_id = rt.ids.hex(8)
        self._tasks = rt.task_group("PubSubBus")
        self._target: Platform | None = None
        self._subscription: Subscription | None = None
        self._activating = asyncio.Lock()
        self._deactivations = 0
        self._unlisten: Callable[[], None] | None = None
        self._queue: list[tuple[str, int]] = []
        self._flush_scheduled = False
        self.hooks = BusHooks(self)
        m = metrics or NULL_METRICS
        self._m_relayed = m.counter("pubsub_messages_relayed_total", "Messages relayed to the bus")
        self._m_received = m.counter("pubsub_messages_received_total", "Messages received")
        self._m_echo = m.counter("pubsub_echo_suppressed_total", "Own envelopes dropped")
        self._m_parse = m.counter("pubsub_parse_errors_total", "Rejected envelopes or entries")
        self._m_batch = m.histogram("pubsub_relay_batch_size", "Envelopes per relay flush")
        self._m_degraded = m.counter("pubsub_degraded_total", "Breaker left healthy")
        self._m_recovered = m.counter("pubsub_recovered_total", "Breaker healthy again")
        self._m_dropped = m.counter(
            "pubsub_relay_dropped_total", "Messages not relayed because the breaker was open"
        )
        self._m_loss = m.counter(
            "pubsub_loss_windows_total", "Reconnects after which messages may have been missed"
        )

    @property
    def active(self) -> bool:
        return self._subscription is not None

    def wrap(self, platform: Platform) -> Platform:
        """A platform whose publishes also go to every other instance."""
        return _BusPlatform(platform, self)

    # -- outbound ------------------------------------------------------------------
    def _single(self, topic: str, event: str, data: Any) -> str:
        try:
            return dumps(
                {"instanceId": self.instance_id, "topic": topic, "event": event, "data": data}
            )
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"pubsub bus: data for topic {topic!r} is not JSON-serialisable: {exc}"
            ) from exc

    def _batch(self, messages: Sequence[Message]) -> str:
        entries = [{"topic": m.topic, "event": m.event, "data": m.data} for m in messages]
        try:
            return dumps({"instanceId": self.instance_id, "batch": entries})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"pubsub bus: batch data is not JSON-serialisable: {exc}") from exc

    def _enqueue(self, envelope: str, count: int) -> None:
        self._queue.append((envelope, count))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            try:
                loop = asyncio.get_running_loop()
                if _runtime.buggify("bus.flush_late"):
                    # A busy loop runs the flush a tick later: later publishes join the batch.
                    loop.call_soon(loop.call_soon, self._flush)
                else:
                    loop.call_soon(self._flush)
            except RuntimeError:
                # No running loop (a sync caller): relay on the next tick of whatever loop runs.
                self._flush_scheduled = False

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._queue = self._queue, []
        if not batch:
            return
        count = sum(n for _, n in batch)
        if self._breaker is not None:
            try:
                self._breaker.guard()
            except CircuitBrokenError:
                self._m_dropped.inc(count)
                return
        self._tasks.spawn(self._send(batch, count), name="uwsx-bus-relay")

    async def _send(self, batch: list[tuple[str, int]], count: int) -> None:
        try:
            if len(batch) == 1:
                await self._pubsub.publish(self.channel, batch[0][0])
            else:
                await self._pubsub.publish_many([(self.channel, env) for env, _ in batch])
        except Exception as exc:
            if self._breaker is not None:
                self._breaker.failure(exc)
            log.warning("pubsub bus: relay of %d message(s) failed: %s", count, exc)
            return
        self._m_batch.observe(len(batch))
        self._m_relayed.inc(count)
        if self._breaker is not None:
            self._breaker.success()

    # -- lifecycle -------------------------------------------------------------------
    async def activate(self, platform: Platform) -> None:
        """Start receiving: inbound messages are published on ``platform``. Calling it again
        only retargets delivery. Concurrent calls (``hooks.open`` of connections opening
        together) share one subscription: two would deliver every message twice."""
        self._target = platform
        if self._subscription is not None:
            return
        async with self._activating:
            if self.active:  # another call subscribed while this one waited
                return
            self._target = platform  # an activation that failed meanwhile cleared it
            await self._subscribe()

    async def _subscribe(self) -> None:
        if self._breaker is not None:
            self._breaker.guard()
            if self._unlisten is None:
                self._unlisten = self._breaker.subscribe(self._on_breaker)
        deactivations = self._deactivations
        try:
            subscription = await self._pubsub.subscribe(
                [self.channel], self._on_message, on_loss=self._on_loss
            )
            if _runtime.buggify("bus.subscribe_ack_late"):
                # The subscribe reply is processed after the first messages were delivered.
                await self._clock.sleep(0)
            if self._deactivations != deactivations:
                # deactivate() ran while this subscribed: the later call wins.
                await subscription.close()
                return
            self._subscription = subscription
        except Exception as exc:
            if self._breaker is not None:
                self._breaker.failure(exc)
            self._target = None
            self._stop_listening()
            raise
        if self._breaker is not None:
            self._breaker.success()

    def _stop_listening(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    async def deactivate(self) -> None:
        """Stop receiving (queued relays still go out). An activation still subscribing is
        undone when its subscription arrives."""
        self._deactivations += 1
        self._stop_listening()
        subscription, self._subscription = self._subscription, None
        self._target = None
        if subscription is not None:
            try:
                await subscription.close()
            except Exception as exc:
                log.debug("pubsub bus: unsubscribe failed: %s", exc)

    async def close(self) -> None:
        await self.deactivate()
        await self._tasks.aclose()

    async def __aenter__(self) -> PubSubBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- inbound ---------------------------------------------------------------------
    def _on_message(self, channel: str, raw: str) -> None:
        if channel != self.channel:
            return
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
        if envelope["instanceId"] == self.instance_id:
            self._m_echo.inc()
            return
        target = self._target
        if target is None:
            return
        try:
            self._deliver(target, envelope)
        except Exception:
            self._m_parse.inc()
            log.exception("pubsub bus: local delivery failed")

    def _deliver(self, target: Platform, envelope: dict[str, Any]) -> None:
        batch = envelope.get("batch")
        if isinstance(batch, list):
            good = []
            for item in batch:
                entry = EnvelopeValidator.entry(item)
                if entry is None or not self._validator.accept(entry[0], entry[1]):
                    self._m_parse.inc()
                    continue
                good.append(Message(entry[0], entry[1], entry[2], relay=False))
            if good:
                self._m_received.inc(len(good))
                target.publish_batched(good)
            return
        topic, event = envelope.get("topic"), envelope.get("event")
        if not self._validator.accept(topic, event):
            self._m_parse.inc()
            return
        assert isinstance(topic, str)
        assert isinstance(event, str)
        self._m_received.inc()
        target.publish(topic, event, envelope.get("data"), relay=False)

    # -- health ----------------------------------------------------------------------
    def _emit_system(self, event: str, data: dict[str, Any]) -> None:
        target = self._target
        if self.system_channel is not None and target is not None:
            try:
                target.publish(self.system_channel, event, data, relay=False)
            except Exception:
                log.exception("pubsub bus: local %s event failed", event)

    def _on_breaker(self, old: BreakerState, new: BreakerState) -> None:
        if old == "healthy" and new != "healthy":
            callback, event, counter = self._on_degraded, "degraded", self._m_degraded
        elif old != "healthy" and new == "healthy":
            callback, event, counter = self._on_recovered, "recovered", self._m_recovered
        else:
            return
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("pubsub bus: on_%s callback failed", event)
        if self.system_channel is not None and self._target is not None:
            self._emit_system(event, {"at": int(self._clock.wall() * 1000)})
            counter.inc()

    def _on_loss(self, window: LossWindow) -> None:
        self._m_loss.inc()
        log.warning(
            "pubsub bus: subscription on %r was down; messages between %.3f and %.3f may be lost",
            self.channel,
            window.started,
            window.ended,
        )
        self._emit_system(
            "loss", {"from": int(window.started * 1000), "to": int(window.ended * 1000)}
        )


def _is_message_list(messages: object) -> bool:
    return isinstance(messages, list | tuple) and all(isinstance(m, Message) for m in messages)
