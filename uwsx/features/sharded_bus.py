"""``ShardedBus``: cluster-wide publishes over per-topic (or per-shard) sharded channels.

Each topic maps to the channel ``channel_prefix + shard_key(topic)``; an instance subscribes
(sharded, capability ``sharded_pubsub``) only to the channels of topics it follows, so on a
clustered backend a message travels to the shard owning its channel instead of every node.

Guarantee: while this instance follows a topic, every message another instance relays for that
topic is published locally exactly once (at most once over the wire, like every pub/sub), with
``relay=False``; messages of topics it does not follow are never published, even when they
share a shard channel with a followed topic or arrive while their unsubscribe is in flight (the
receiver checks the topic against the local follow counts, not just the channel), and neither
are envelopes that fail validation or its own echoes. Follow state cannot get stuck: a follow
that fails (breaker open, backend down) leaves no trace, so the next follow subscribes again;
the ``hooks`` keep retrying a connection's failed follows in the background until they succeed;
and which channels are subscribed is always read from the subscription itself, so an
unsubscribe that failed after the adapter already dropped the channel cannot leave the bus
believing it is still subscribed (a later follow would then never re-add it). The original kept
the refcount of a failed follow, so the channel was never subscribed again, and recorded a hook
subscription before it succeeded, so it was never retried. ``publish_batched`` sends exactly one
envelope per shard channel per call.

Invariants (Checked by: ``uwsx_sim`` sharded-bus checker):

* SB-1 at rest, the subscription holds exactly the channels of the followed topics; refcounts
  never go below one.
* SB-2 a failed ``follow``/``follow_batch`` restores every refcount it changed.
* SB-3 an envelope carries only topics of the channel it is sent on, a delivered message's topic
  maps to the channel it arrived on, and nothing is delivered twice (own envelopes dropped).
* SB-4 a message relayed for a topic reaches every instance that follows the topic while its
  subscription is up (at most once: pub/sub loss is reported through ``on_loss``).
* SB-5 a topic this instance does not follow is never published locally.

Wire: envelopes as :class:`~uwsx.features.bus.PubSubBus` (``{instanceId, topic, event, data}``
or ``{instanceId, batch: [...]}``), published with ``sharded=True``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from uwsx import _runtime
from uwsx.connect import require
from uwsx.errors import CircuitBrokenError
from uwsx.features._envelope import DEFAULT_MAX_ENVELOPE_BYTES, EnvelopeValidator
from uwsx.features._json import dumps
from uwsx.features.sharded_bus_hooks import ShardedBusHooks
from uwsx.features.sharded_bus_refs import FollowRefs
from uwsx.features.sharded_bus_wire import Receiver, ShardedPlatform
from uwsx.metrics import NULL_METRICS, MetricsLike
from uwsx.platform import Message, Platform
from uwsx.ports.backend import Backend, Capability
from uwsx.ports.pubsub import LossWindow, PubSub, Subscription
from uwsx.reliability.breaker import BreakerState, CircuitBreaker, with_breaker

__all__ = ["MAX_SHARDED_BUS_TOPICS", "LocalSubject", "ShardedBus", "ShardedBusHooks"]

log = logging.getLogger("uwsx.sharded_bus")

#: Distinct followed topics per bus; ``follow`` raises beyond it, ``follow_batch`` skips.
MAX_SHARDED_BUS_TOPICS = 10_000_000


class SubscribersAggregator(Protocol):
    """Cluster-wide subscriber counts (``PublishRateAggregator``)."""

    def subscribers_of(self, topic: str) -> int: ...


@dataclass(frozen=True, slots=True)
class LocalSubject:
    """A followed topic with local subscribers (``ShardedBus.local_subjects``)."""

    topic: str
    count: int


class ShardedBus:
    """Relay publishes over sharded channels, subscribing only to followed topics.

    :param backend: a backend with the ``pubsub`` port and the ``sharded_pubsub`` capability.
    :param channel_prefix: prepended to the shard label (namespaced by the backend key prefix).
    :param shard_key: ``topic -> label``; identity by default (one channel per topic).
    :param subscribers_aggregator: an object with ``subscribers_of(topic)`` giving cluster-wide
        counts for :meth:`subscribers`.
    :param max_envelope_bytes: largest received envelope accepted.
    :param allow_system_topics: accept ``__`` topics from the bus.
    :param retry_interval: first delay (seconds) before a failed hook follow is retried; it
        doubles per failure up to 30 s.
    :raises UnsupportedBackendError: the backend lacks ``pubsub`` or ``sharded_pubsub``.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        channel_prefix: str = "uws:sharded:",
        shard_key: Callable[[str], str] | None = None,
        subscribers_aggregator: SubscribersAggregator | None = None,
        max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        allow_system_topics: bool = False,
        retry_interval: float = 1.0,
        breaker: CircuitBreaker | None = None,
        metrics: MetricsLike | None = None,
    ) -> None:
        if not isinstance(channel_prefix, str):
            raise TypeError("channel_prefix must be a string")
        if shard_key is not None and not callable(shard_key):
            raise TypeError("shard_key must be a function")
        if subscribers_aggregator is not None and not callable(
            getattr(subscribers_aggregator, "subscribers_of", None)
        ):
            raise TypeError("subscribers_aggregator must have a subscribers_of(topic) method")
        if (
            isinstance(retry_interval, bool)
            or not isinstance(retry_interval, int | float)
            or not 0 < retry_interval < float("inf")
        ):
            raise ValueError("retry_interval must be a positive number of seconds")
        require(backend, "ShardedBus", ports=("pubsub",), capabilities=(Capability.SHARDED_PUBSUB,))
        pubsub = backend.pubsub
        assert pubsub is not None
        self._pubsub: PubSub = pubsub
        self.channel_prefix = channel_prefix
        self._shard_key = shard_key
        self._aggregator = subscribers_aggregator
        self._breaker = breaker
        rt = _runtime.current()
        self._clock = rt.clock
        self.instance_id = rt.ids.hex(8)
        self._tasks = rt.task_group("ShardedBus")
        self._target: Platform | None = None
        self._subscription: Subscription | None = None
        self._lock = asyncio.Lock()
        self._refs = FollowRefs(self.channel_for)
        self._queue: dict[str, list[tuple[str, list[str]]]] = {}
        self._flush_scheduled = False
        self._unlisten: Callable[[], None] | None = None
        self.hooks = ShardedBusHooks(self, float(retry_interval))
        m = metrics or NULL_METRICS
        self._map_topic = m.map_topic
        self._m_relayed = m.counter(
            "sharded_pubsub_messages_relayed_total",
            "Messages published on sharded channels",
            ("topic",),
        )
        self._m_ssub = m.counter(
            "sharded_pubsub_ssubscribes_total", "Sharded channels subscribed (first follower)"
        )
        self._m_sunsub = m.counter(
            "sharded_pubsub_sunsubscribes_total", "Sharded channels unsubscribed (last follower)"
        )
        self._m_dropped = m.counter(
            "sharded_pubsub_relay_dropped_total", "Messages not relayed: breaker open"
        )
        self._m_unfollowed = m.counter(
            "sharded_pubsub_unfollowed_dropped_total",
            "Received messages of topics not followed here (shared channel, unsubscribe in flight)",
        )
        self._receiver = Receiver(
            self,
            EnvelopeValidator(
                max_bytes=max_envelope_bytes, allow_system_topics=allow_system_topics
            ),
            m,
        )

    # -- naming --------------------------------------------------------------------
    def channel_for(self, topic: str) -> str:
        """The sharded channel carrying ``topic``."""
        label = topic if self._shard_key is None else self._shard_key(topic)
        if not isinstance(label, str):
            raise TypeError(f"shard_key must return a str, got {type(label).__name__}")
        return self.channel_prefix + label

    @property
    def active(self) -> bool:
        return self._subscription is not None

    @property
    def target(self) -> Platform | None:
        """The platform inbound messages are published on."""
        return self._target

    def wrap(self, platform: Platform) -> Platform:
        """A platform whose publishes also reach every instance following the topic."""
        return ShardedPlatform(platform, self)

    # -- outbound ------------------------------------------------------------------
    def _single(self, topic: str, event: str, data: Any) -> tuple[str, str, list[str]]:
        try:
            envelope = dumps(
                {"instanceId": self.instance_id, "topic": topic, "event": event, "data": data}
            )
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"sharded bus: data for topic {topic!r} is not JSON-serialisable: {exc}"
            ) from exc
        return self.channel_for(topic), envelope, [topic]

    def _grouped(self, messages: Sequence[Message]) -> list[tuple[str, str, list[str]]]:
        groups: dict[str, list[Message]] = {}
        for m in messages:
            groups.setdefault(self.channel_for(m.topic), []).append(m)
        out = []
        for channel, group in groups.items():
            entries = [{"topic": m.topic, "event": m.event, "data": m.data} for m in group]
            try:
                envelope = dumps({"instanceId": self.instance_id, "batch": entries})
            except (TypeError, ValueError) as exc:
                raise TypeError(f"sharded bus: batch data is not JSON-serialisable: {exc}") from exc
            out.append((channel, envelope, [m.topic for m in group]))
        return out

    def _enqueue(self, channel: str, envelope: str, topics: list[str]) -> None:
        self._queue.setdefault(channel, []).append((envelope, topics))
        if not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop: relayed with the next burst that has one
            if _runtime.buggify("sharded_bus.flush_late"):
                # A busy loop runs the flush a tick later: later publishes join the batch.
                loop.call_soon(loop.call_soon, self._flush)
            else:
                loop.call_soon(self._flush)
            self._flush_scheduled = True

    def _flush(self) -> None:
        self._flush_scheduled = False
        queue, self._queue = self._queue, {}
        if not queue:
            return
        # Channels in first-seen order, envelopes in queue order within each channel.
        batch = [(ch, env, topics) for ch, items in queue.items() for env, topics in items]
        if self._breaker is not None:
            try:
                self._breaker.guard()
            except CircuitBrokenError:
                self._m_dropped.inc(sum(len(t) for _, _, t in batch))
                return
        self._tasks.spawn(self._send(batch), name="uwsx-sharded-relay")

    async def _send(self, batch: list[tuple[str, str, list[str]]]) -> None:
        try:
            await self._pubsub.publish_many([(ch, env) for ch, env, _ in batch], sharded=True)
        except Exception as exc:
            if self._breaker is not None:
                self._breaker.failure(exc)
            log.warning("sharded bus: relay of %d envelope(s) failed: %s", len(batch), exc)
            return
        for _, _, topics in batch:
            for topic in topics:
                self._m_relayed.inc(topic=self._map_topic(topic))
        if self._breaker is not None:
            self._breaker.success()

    # -- lifecycle -------------------------------------------------------------------
    async def activate(self, platform: Platform) -> None:
        """Start receiving on ``platform`` (calling it again only retargets delivery).
        Subscribes no channel by itself: :meth:`follow` does."""
        self._target = platform
        async with self._lock:
            if self._subscription is not None:
                return
            try:
                self._subscription = await with_breaker(
                    self._breaker,
                    lambda: self._pubsub.subscribe(
                        [], self._receiver.on_message, sharded=True, on_loss=self._on_loss
                    ),
                )
            except BaseException:
                self._target = None
                raise
        if self._breaker is not None and self._unlisten is None:
            self._unlisten = self._breaker.subscribe(self._on_breaker)
        self.hooks.wake()

    async def deactivate(self) -> None:
        """Stop receiving: every channel is released and every refcount forgotten (the hooks'
        per-connection records are kept, as in the original)."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        async with self._lock:
            subscription, self._subscription = self._subscription, None
            self._target = None
            self._queue.clear()
            self._refs.clear()
        if subscription is not None:
            try:
                await subscription.close()
            except Exception as exc:
                log.debug("sharded bus: unsubscribe failed: %s", exc)

    async def close(self) -> None:
        """Deactivate and stop background work. Idempotent."""
        await self.deactivate()
        self.hooks.clear()
        await self._tasks.aclose()

    async def __aenter__(self) -> ShardedBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- following -------------------------------------------------------------------
    def _check_active(self, what: str) -> None:
        if self._subscription is None:
            raise RuntimeError(f"sharded bus: activate() must be called before {what}()")

    async def follow(self, topic: str) -> None:
        """Add one reference to ``topic``; the first reference of a channel subscribes it.

        :raises RuntimeError: before :meth:`activate`, or beyond ``MAX_SHARDED_BUS_TOPICS``.
        :raises CircuitBrokenError: the breaker is open (nothing changed).
        """
        self._check_active("follow")
        if not isinstance(topic, str) or not topic:
            raise ValueError("topic must be a non-empty string")
        if topic not in self._refs.topics and len(self._refs.topics) >= MAX_SHARDED_BUS_TOPICS:
            raise RuntimeError(
                f"sharded bus: distinct topic count exceeded {MAX_SHARDED_BUS_TOPICS}"
            )
        channel = self._refs.bump(topic)
        try:
            if _runtime.buggify("sharded_bus.follow_yield"):
                # The lock is contended: other follows and unfollows run first.
                await self._clock.sleep(0)
            await self._reconcile([channel], strict=True)
        except BaseException:
            self._refs.unbump(topic)
            raise

    async def follow_batch(self, topics: Sequence[str]) -> list[str]:
        """Add one reference to each distinct topic, subscribing every newly needed channel in
        one call. Non-strings, empty strings and new topics beyond the cap are skipped.

        :returns: the topics that were followed.
        :raises TypeError: ``topics`` is not a list or tuple.
        """
        self._check_active("follow_batch")
        if not isinstance(topics, list | tuple):
            raise TypeError("sharded bus: follow_batch requires an array of topics")
        wanted = [t for t in dict.fromkeys(topics) if isinstance(t, str) and t]
        for topic in wanted:
            self.channel_for(topic)  # a failing shard_key must fail before anything changes
        bumped: list[str] = []
        channels: list[str] = []
        for topic in wanted:
            if topic not in self._refs.topics and len(self._refs.topics) >= MAX_SHARDED_BUS_TOPICS:
                continue
            channels.append(self._refs.bump(topic))
            bumped.append(topic)
        if not bumped:
            return []
        try:
            await self._reconcile(channels, strict=True)
        except BaseException:
            for topic in bumped:
                self._refs.unbump(topic)
            raise
        return bumped

    async def unfollow(self, topic: str) -> None:
        """Drop one reference; the last reference of a channel unsubscribes it (errors are
        logged; the channel is retried on the next reconcile)."""
        channel = self._refs.unbump(topic)
        if channel is not None:
            await self._reconcile([channel], strict=False)

    async def _reconcile(self, channels: Iterable[str], *, strict: bool) -> None:
        """Bring the backend subscription in line with the refcounts for ``channels``.

        What is subscribed is read from the subscription every time, never tracked here: an
        adapter forgets a channel as soon as it is asked to remove it (before the server
        confirms) and detaches a channel whose subscribe failed, so a copy kept by the bus would
        drift from it after a failure. Non-strict callers (unfollow, resync) log failures."""
        async with self._lock:
            sub = self._subscription
            if sub is None:
                if strict:
                    raise RuntimeError("sharded bus: deactivated during follow()")
                return
            wanted, refs, have = set(channels), self._refs.channels, sub.channels
            add = sorted(c for c in wanted if c in refs and c not in have)
            drop = sorted(c for c in wanted if c not in refs and c in have)
            if add:
                try:
                    await with_breaker(self._breaker, lambda: sub.add(add))
                except Exception as exc:
                    if strict:
                        raise
                    log.warning("sharded bus: subscribe of %s failed: %s", add, exc)
                else:
                    self._m_ssub.inc(len(add))
            if drop:
                try:
                    await sub.remove(drop)
                except Exception as exc:
                    # Delivery stops anyway: the receiver drops topics no longer followed.
                    log.warning("sharded bus: unsubscribe of %s failed: %s", drop, exc)
                    return
                self._m_sunsub.inc(len(drop))

    async def resync(self) -> None:
        """Reconcile every channel (followed or subscribed) with the refcounts; failures are
        logged. Runs after the subscription reconnected."""
        if _runtime.buggify("sharded_bus.resync_late"):
            # The resync after a reconnect runs late (a loop busy for 10 ms): messages and
            # follows arrive first.
            await self._clock.sleep(0.01)
        sub = self._subscription
        if sub is not None:
            await self._reconcile(set(self._refs.channels) | set(sub.channels), strict=False)

    def _on_breaker(self, old: BreakerState, new: BreakerState) -> None:
        if new == "healthy":
            self.hooks.wake()

    def _on_loss(self, window: LossWindow) -> None:
        log.warning(
            "sharded bus: subscription was down between %.3f and %.3f; messages may be lost",
            window.started,
            window.ended,
        )
        try:
            self._tasks.spawn(self.resync(), name="uwsx-sharded-resync")
        except RuntimeError:
            return  # closing

    # -- observation -----------------------------------------------------------------
    def followed(self) -> dict[str, int]:
        """Followed topics and their reference counts."""
        return dict(self._refs.topics)

    def follows(self, topic: str) -> bool:
        """True while ``topic`` has at least one reference here."""
        return topic in self._refs.topics

    def subscribed_channels(self) -> frozenset[str]:
        """Channels the subscription currently holds (the adapter's view)."""
        sub = self._subscription
        return frozenset() if sub is None else frozenset(sub.channels)

    def local_subjects(self, platform: Platform) -> list[LocalSubject]:
        """Followed topics that have local subscribers on ``platform``."""
        counter = getattr(platform, "subscribers", None)
        if not callable(counter):
            return []
        out = []
        for topic in self._refs.topics:
            count = counter(topic)
            if isinstance(count, int) and count > 0:
                out.append(LocalSubject(topic, count))
        return out

    def subscribers(self, topic: str) -> int:
        """Cluster-wide subscribers from the aggregator, else local ones (0 before
        activation)."""
        if self._aggregator is not None:
            return int(self._aggregator.subscribers_of(topic))
        target = self._target
        return 0 if target is None else target.subscribers(topic)
