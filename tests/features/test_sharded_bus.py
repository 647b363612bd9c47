"""ShardedBus: seed spec §4.6 acceptance statements, the §4.5/§23 B3-B4 regressions, on every
backend kind with a pubsub port and the ``sharded_pubsub`` capability.

Adapted or skipped statements: §4.6.1-2 (Redis ``INFO`` version checks) become the capability
check at construction and a failing subscribe at ``activate``; §4.6.23 (real aggregator) uses a
fake ``subscribers_of`` object because the publish-rate aggregator is a separate feature.
§4.6.19's last sentence deliberately differs: a shard channel shared by several topics no
longer leaks the topics this instance does not follow (uwsx_sim SB-5).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.features.sharded_bus_support import active, adds, prefix_shard, relayed
from tests.helpers import Opener, eventually, settle
from uwsx.errors import UnsupportedBackendError
from uwsx.features.sharded_bus import LocalSubject, ShardedBus
from uwsx.metrics import Metrics
from uwsx.platform import Message
from uwsx.ports.backend import Backend
from uwsx.reliability import CircuitBreaker
from uwsx.testing import (
    FaultyBackend,
    MockConnection,
    MockPlatform,
    Published,
)

pytestmark = pytest.mark.needs("sharded_pubsub")


# -- construction and activation (§4.6.1-2) ---------------------------------------------------


async def test_backend_without_sharded_pubsub_is_rejected_at_construction(
    backend: Backend,
) -> None:
    plain = FaultyBackend(backend, capabilities=frozenset())
    with pytest.raises(UnsupportedBackendError, match="sharded_pubsub"):
        ShardedBus(plain)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"channel_prefix": 1}, "channel_prefix must be a string"),
        ({"shard_key": "x"}, "shard_key must be a function"),
        ({"subscribers_aggregator": object()}, "subscribers_of"),
        ({"retry_interval": 0}, "retry_interval"),
    ],
)
async def test_invalid_options_name_the_argument(
    backend: Backend, opts: dict[str, Any], message: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        ShardedBus(backend, **opts)


async def test_activate_twice_is_fine_and_retargets(backend: Backend) -> None:
    bus, _ = await active(backend)
    other = MockPlatform()
    await bus.activate(other)
    assert bus.target is other
    await bus.close()


async def test_failed_activate_counts_a_breaker_failure_and_can_be_retried(
    backend: Backend,
) -> None:
    faulty = FaultyBackend(backend)
    breaker = CircuitBreaker(failure_threshold=5)
    bus = ShardedBus(faulty, breaker=breaker)
    faulty.faults.fail("pubsub.subscribe", times=1)
    with pytest.raises(Exception, match="injected"):
        await bus.activate(MockPlatform())
    assert (breaker.failures, bus.active, bus.target) == (1, False, None)
    await bus.activate(MockPlatform())
    assert (bus.active, breaker.failures) == (True, 0)
    await bus.close()


# -- publishing (§4.6.3-6) -----------------------------------------------------------------------


async def test_default_shard_key_uses_one_channel_per_topic(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    bus = ShardedBus(faulty)
    p = MockPlatform()
    w = bus.wrap(p)
    w.publish("chat:room1", "msg", 1)
    w.publish("chat:room2", "msg", 2)
    await eventually(lambda: len(relayed(faulty)) == 2)
    assert [ch for ch, _ in relayed(faulty)] == ["uws:sharded:chat:room1", "uws:sharded:chat:room2"]
    assert faulty.faults.called("pubsub.publish_many")[0].kwargs == {"sharded": True}
    await bus.close()


async def test_shard_key_groups_topics_on_one_channel(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    bus = ShardedBus(faulty, shard_key=prefix_shard)
    w = bus.wrap(MockPlatform())
    w.publish("chat:room1", "msg", 1)
    w.publish("chat:room2", "msg", 2)
    await eventually(lambda: len(relayed(faulty)) == 2)
    assert [ch for ch, _ in relayed(faulty)] == ["uws:sharded:chat", "uws:sharded:chat"]
    await bus.close()


async def test_relay_false_publishes_only_locally(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    bus = ShardedBus(faulty)
    p = MockPlatform()
    bus.wrap(p).publish("chat", "msg", 1, relay=False)
    await settle()
    assert (relayed(faulty), p.published) == ([], [Published("chat", "msg", 1, relay=False)])
    await bus.close()


async def test_publish_batched_sends_one_envelope_per_shard_channel(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    bus = ShardedBus(faulty, shard_key=prefix_shard)
    bus.wrap(MockPlatform()).publish_batched(
        [
            Message("chat:room1", "msg", 1),
            Message("audit:org1", "created", 3),
            Message("chat:room2", "msg", 2),
            Message("audit:org1", "created", 4),
        ]
    )
    await eventually(lambda: len(relayed(faulty)) == 2)
    by_channel = {ch: [e["data"] for e in env["batch"]] for ch, env in relayed(faulty)}
    assert by_channel == {"uws:sharded:chat": [1, 2], "uws:sharded:audit": [3, 4]}
    await bus.close()


async def test_publish_batched_default_shard_key_one_envelope_per_topic(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    bus = ShardedBus(faulty)
    bus.wrap(MockPlatform()).publish_batched(
        [Message("chat:room1", "m", 1), Message("chat:room2", "m", 2)]
    )
    await eventually(lambda: len(relayed(faulty)) == 2)
    assert sorted(ch for ch, _ in relayed(faulty)) == [
        "uws:sharded:chat:room1",
        "uws:sharded:chat:room2",
    ]
    await bus.close()


async def test_publish_batched_skips_relay_false_entries(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    bus = ShardedBus(faulty)
    p = MockPlatform()
    w = bus.wrap(p)
    w.publish_batched([Message("t", "x"), Message("t", "y", relay=False), Message("t", "z")])
    w.publish_batched([Message("t", "q", relay=False)])
    w.publish_batched([])
    await eventually(lambda: len(relayed(faulty)) == 1)
    await settle()
    [(_, envelope)] = relayed(faulty)
    assert [e["event"] for e in envelope["batch"]] == ["x", "z"]
    assert [len(b) for b in p.published_batches] == [3, 1]
    await bus.close()


@pytest.mark.parametrize("bad", ["nope", None, [{"topic": "t"}]])
async def test_publish_batched_requires_message_list(backend: Backend, bad: Any) -> None:
    bus = ShardedBus(backend)
    with pytest.raises(TypeError, match="publish_batched requires"):
        bus.wrap(MockPlatform()).publish_batched(bad)
    await bus.close()


# -- following (§4.6.8-14) -------------------------------------------------------------------


async def test_follow_refcounts_the_channel(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    bus, _ = await active(faulty)
    await bus.follow("chat:room1")
    assert bus.subscribed_channels() == {"uws:sharded:chat:room1"}
    await bus.follow("chat:room1")
    await bus.unfollow("chat:room1")
    assert bus.subscribed_channels() == {"uws:sharded:chat:room1"}
    await bus.unfollow("chat:room1")
    assert bus.subscribed_channels() == frozenset()
    assert adds(faulty) == [["uws:sharded:chat:room1"]]
    assert len(faulty.faults.called("subscription.remove")) == 1
    await bus.close()


async def test_topics_sharing_a_shard_share_one_channel(backend: Backend) -> None:
    bus, _ = await active(backend, shard_key=prefix_shard)
    await bus.follow("chat:room1")
    await bus.follow("chat:room2")
    assert bus.subscribed_channels() == {"uws:sharded:chat"}
    await bus.unfollow("chat:room1")
    assert bus.subscribed_channels() == {"uws:sharded:chat"}
    await bus.unfollow("chat:room2")
    assert bus.subscribed_channels() == frozenset()
    await bus.close()


async def test_follow_needs_activation_and_follow_batch_a_list(backend: Backend) -> None:
    bus = ShardedBus(backend)
    with pytest.raises(RuntimeError, match=r"activate\(\) must be called before follow\(\)"):
        await bus.follow("chat")
    with pytest.raises(RuntimeError, match="activate"):
        await bus.follow_batch(["chat"])
    await bus.activate(MockPlatform())
    with pytest.raises(TypeError, match="array of topics"):
        await bus.follow_batch("chat")
    await bus.close()


async def test_follow_batch_subscribes_all_new_channels_in_one_call(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    bus, _ = await active(faulty, shard_key=prefix_shard)
    await bus.follow_batch(["chat:room1", "chat:room2", "audit:created", "audit:updated"])
    assert adds(faulty) == [["uws:sharded:audit", "uws:sharded:chat"]]
    await bus.close()


async def test_follow_batch_collapses_duplicates(backend: Backend) -> None:
    bus, _ = await active(backend)
    assert await bus.follow_batch(["chat", "chat", "chat"]) == ["chat"]
    await bus.unfollow("chat")
    assert bus.subscribed_channels() == frozenset()
    await bus.close()


async def test_follow_batch_subscribes_only_missing_channels(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    bus, _ = await active(faulty)
    await bus.follow("chat")
    await bus.follow_batch(["chat", "audit"])
    assert adds(faulty) == [["uws:sharded:chat"], ["uws:sharded:audit"]]
    await bus.close()


async def test_failed_follow_batch_rolls_back_every_refcount(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    bus, _ = await active(faulty)
    faulty.faults.fail("subscription.add", times=1)
    with pytest.raises(Exception, match="injected"):
        await bus.follow_batch(["chat", "audit"])
    assert bus.followed() == {}
    await bus.follow("chat")
    assert adds(faulty)[-1] == ["uws:sharded:chat"]
    assert bus.subscribed_channels() == {"uws:sharded:chat"}
    await bus.close()


# -- hooks (§4.6.15-16) ------------------------------------------------------------------------


async def test_hooks_follow_and_close_release_everything(backend: Backend) -> None:
    bus, _ = await active(backend)
    subscribe, close = bus.hooks.subscribe, bus.hooks.close
    ws = MockConnection()
    await subscribe(ws, "chat")
    await subscribe(ws, "audit")
    await subscribe(ws, "chat")
    await subscribe(ws, "__internal")
    assert bus.subscribed_channels() == {"uws:sharded:chat", "uws:sharded:audit"}
    assert bus.followed() == {"chat": 1, "audit": 1}
    await close(ws)
    assert bus.subscribed_channels() == frozenset()
    await bus.close()


async def test_subscribe_batch_hook_skips_system_and_known_topics(backend: Backend) -> None:
    bus, _ = await active(backend)
    ws = MockConnection()
    await bus.hooks.subscribe_batch(ws, ["chat", "__internal", "__realtime"])
    assert bus.subscribed_channels() == {"uws:sharded:chat"}
    await bus.hooks.subscribe_batch(ws, ["chat", "audit"])
    assert bus.followed() == {"chat": 1, "audit": 1}
    await bus.hooks.unsubscribe(ws, "chat")
    await bus.hooks.unsubscribe(ws, "audit")
    assert bus.subscribed_channels() == frozenset()
    nothing: list[Any] | None
    for nothing in (None, []):
        await bus.hooks.subscribe_batch(ws, nothing)
    assert bus.followed() == {}
    await bus.close()


# -- observation (§4.6.17-18, 23) -------------------------------------------------------------


async def test_local_subjects_reports_followed_topics_with_local_subscribers(
    backend: Backend,
) -> None:
    bus, _ = await active(backend)
    p = MockPlatform()
    assert bus.local_subjects(p) == []
    await bus.follow_batch(["chat:room1", "audit:org1", "quiet"])
    p.subscriber_counts.update({"chat:room1": 4, "audit:org1": 2, "quiet": 0})
    assert sorted(bus.local_subjects(p), key=lambda s: s.topic) == [
        LocalSubject("audit:org1", 2),
        LocalSubject("chat:room1", 4),
    ]
    assert bus.local_subjects(object()) == []  # type: ignore[arg-type]
    await bus.close()


async def test_subscribers_local_or_from_the_aggregator(backend: Backend) -> None:
    bus = ShardedBus(backend)
    assert bus.subscribers("chat") == 0
    p = MockPlatform()
    p.subscriber_counts["chat"] = 5
    await bus.activate(p)
    assert (bus.subscribers("chat"), bus.subscribers("unknown")) == (5, 0)
    await bus.close()

    class Aggregator:
        def subscribers_of(self, topic: str) -> int:
            return 17 if topic == "shared" else 0

    agg_bus = ShardedBus(backend, subscribers_aggregator=Aggregator())
    assert (agg_bus.subscribers("shared"), agg_bus.subscribers("other")) == (17, 0)
    await agg_bus.close()


# -- two instances (§4.6.7, 19-22, 24) ---------------------------------------------------------


async def two(
    open_backend: Opener, **opts: Any
) -> tuple[ShardedBus, MockPlatform, ShardedBus, MockPlatform]:
    a, pa = await active(await open_backend(), **opts)
    b, pb = await active(await open_backend(), **opts)
    return a, pa, b, pb


async def test_payload_round_trips_with_relay_false_and_no_echo(open_backend: Opener) -> None:
    a, pa, b, pb = await two(open_backend)
    await a.follow("chat")
    await b.follow("chat")
    a.wrap(pa).publish("chat", "msg", {"from": "A", "nested": [1, None]})
    await eventually(lambda: len(pb.published) == 1)
    assert pb.published == [Published("chat", "msg", {"from": "A", "nested": [1, None]}, False)]
    await settle()
    assert len(pa.published) == 1
    await a.close()
    await b.close()


async def test_only_followed_topics_are_delivered(open_backend: Opener) -> None:
    a, pa, b, pb = await two(open_backend)
    await b.follow("kept")
    w = a.wrap(pa)
    w.publish("ignored", "msg", 0)
    w.publish("kept", "msg", 1)
    await eventually(lambda: len(pb.published) == 1)
    await settle()
    assert [m.topic for m in pb.published] == ["kept"]
    await a.close()
    await b.close()


async def test_shared_shard_channel_delivers_only_followed_topics(open_backend: Opener) -> None:
    """uwsx_sim sharded-bus-partition seed 1 (SB-5): the receiver published every topic of the
    channel, followed or not (seed spec §4.6.19 expected exactly that leak)."""
    a, pa, b, pb = await two(open_backend, shard_key=prefix_shard)
    await b.follow("chat:room2")
    w = a.wrap(pa)
    w.publish("chat:room1", "msg", 1)
    w.publish_batched([Message("chat:room1", "m", 2), Message("chat:room2", "m", 3)])
    w.publish("chat:room2", "msg", 4)
    await eventually(lambda: len(pb.published) == 2)
    assert pb.published == [
        Published("chat:room2", "m", 3, relay=False, batched=True),
        Published("chat:room2", "msg", 4, relay=False),
    ]
    assert pb.published_batches == [[Message("chat:room2", "m", 3, relay=False)]]
    await a.close()
    await b.close()


async def test_unfollowed_topic_on_a_still_subscribed_channel_is_dropped(
    open_backend: Opener,
) -> None:
    """While an unsubscribe is in flight, or after it failed, the channel still delivers: the
    topic's messages must not reach local subscribers any more."""
    metrics = Metrics()
    a, pa = await active(await open_backend())
    faulty = FaultyBackend(await open_backend())
    b, pb = await active(faulty, metrics=metrics)
    await b.follow("t")
    faulty.faults.fail("subscription.remove")
    await b.unfollow("t")  # logged; the channel stays subscribed
    assert b.subscribed_channels() == frozenset({"uws:sharded:t"})
    a.wrap(pa).publish("t", "m", 1)
    await eventually(
        lambda: "sharded_pubsub_unfollowed_dropped_total 1.0" in metrics.serialize(),
        what="the message to arrive and be dropped",
    )
    assert pb.published == []
    await a.close()
    await b.close()


async def test_batches_arrive_as_one_batch_per_shard_in_order(open_backend: Opener) -> None:
    a, pa, b, pb = await two(open_backend, shard_key=prefix_shard)
    await b.follow_batch(["chat:room1", "audit:org1"])
    w = a.wrap(pa)
    w.publish_batched([Message("chat:room1", "m", i) for i in (1, 2, 3)])
    await eventually(lambda: len(pb.published_batches) == 1)
    assert [m.data for m in pb.published_batches[0]] == [1, 2, 3]
    assert all(not m.relay for m in pb.published_batches[0])
    w.publish_batched(
        [
            Message("chat:room1", "m", 4),
            Message("audit:org1", "m", 5),
            Message("chat:room1", "m", 6),
        ]
    )
    await eventually(lambda: len(pb.published_batches) == 3)
    assert sum(len(batch) for batch in pb.published_batches[1:]) == 3
    w.publish_batched([Message("chat:room1", "m", i) for i in range(50)])
    await eventually(lambda: len(pb.published_batches) == 4)
    assert [m.data for m in pb.published_batches[3]] == list(range(50))
    assert len(pa.published_batches) == 3  # each emitted batch seen once locally, no echo
    await a.close()
    await b.close()


async def test_cross_instance_batch_of_two_shard_topics_is_one_local_batch(
    open_backend: Opener,
) -> None:
    a, pa, b, pb = await two(open_backend, shard_key=prefix_shard)
    await b.follow_batch(["chat:room1", "chat:room2"])
    a.wrap(pa).publish_batched([Message("chat:room1", "m", 1), Message("chat:room2", "m", 2)])
    await eventually(lambda: len(pb.published_batches) == 1)
    assert pb.published_batches[0] == [
        Message("chat:room1", "m", 1, relay=False),
        Message("chat:room2", "m", 2, relay=False),
    ]
    await a.close()
    await b.close()


async def test_unfollow_stops_delivery_only_after_the_last_reference(open_backend: Opener) -> None:
    a, pa, b, pb = await two(open_backend)
    await b.follow("t")
    await b.follow("t")
    await b.follow("marker")
    w = a.wrap(pa)
    await b.unfollow("t")
    w.publish("t", "m", 1)
    await eventually(lambda: len(pb.published) == 1)
    await b.unfollow("t")
    w.publish("t", "m", 2)
    w.publish("marker", "m", 3)
    await eventually(lambda: len(pb.published) == 2)
    assert [m.data for m in pb.published] == [1, 3]
    await a.close()
    await b.close()


async def test_follow_churn_delivers_exactly_the_followed_topics(open_backend: Opener) -> None:
    a, pa, b, pb = await two(open_backend)
    await b.follow_batch(["t1", "t2", "t3", "t4", "t5"])
    await b.unfollow("t2")
    await b.unfollow("t4")
    w = a.wrap(pa)
    for t in ("t1", "t2", "t3", "t4", "t5"):
        w.publish(t, "m", t)
    await eventually(lambda: len(pb.published) == 3)
    # Order holds per channel only: on a cluster each topic's channel lives on its own shard.
    assert sorted(m.topic for m in pb.published) == ["t1", "t3", "t5"]
    await b.follow("t4")
    for t in ("t2", "t4"):
        w.publish(t, "m", t)
    await eventually(lambda: len(pb.published) == 4)
    assert pb.published[-1].topic == "t4"
    await a.close()
    await b.close()


async def test_subscribe_batch_hook_delivers_until_close(open_backend: Opener) -> None:
    a, pa, b, pb = await two(open_backend, shard_key=lambda t: ":".join(t.split(":")[:2]))
    ws = MockConnection()
    topics = ["org:42:items", "org:42:audit", "org:42:notifications"]
    await b.hooks.subscribe_batch(ws, topics)
    w = a.wrap(pa)
    for t in topics:
        w.publish(t, "m", t)
    await eventually(lambda: len(pb.published) == 3)
    await b.hooks.close(ws)
    await b.follow("org:1:marker")
    w.publish("org:42:items", "m", "late")
    w.publish("org:1:marker", "m", "marker")
    await eventually(lambda: len(pb.published) == 4)
    assert pb.published[-1].data == "marker"
    await a.close()
    await b.close()


# -- hostile input and metrics --------------------------------------------------------------------


async def test_envelope_topic_must_match_its_channel(open_backend: Opener) -> None:
    import json

    raw = await open_backend()
    b, pb = await active(await open_backend())
    await b.follow("chat")
    assert raw.pubsub is not None
    forged = {"instanceId": "x", "topic": "secret", "event": "m", "data": 1}
    good = {"instanceId": "x", "topic": "chat", "event": "m", "data": 2}
    await raw.pubsub.publish("uws:sharded:chat", json.dumps(forged), sharded=True)
    await raw.pubsub.publish("uws:sharded:chat", "not json", sharded=True)
    await raw.pubsub.publish("uws:sharded:chat", json.dumps(good), sharded=True)
    await eventually(lambda: len(pb.published) == 1)
    assert pb.published == [Published("chat", "m", 2, relay=False)]
    await b.close()


async def test_metrics_count_relays_receipts_and_subscriptions(open_backend: Opener) -> None:
    metrics = Metrics()
    a, pa = await active(await open_backend(), metrics=metrics)
    b, pb = await active(await open_backend(), metrics=metrics)
    await b.follow("chat")
    a.wrap(pa).publish("chat", "m", 1)
    await eventually(lambda: len(pb.published) == 1)
    await b.unfollow("chat")
    relayed = 'sharded_pubsub_messages_relayed_total{topic="chat"} 1.0'
    # The receiver can get the message before the sender's publish call returns and counts it.
    await eventually(lambda: relayed in metrics.serialize(), what="relay counted")
    text = metrics.serialize()
    for line in (
        'sharded_pubsub_messages_relayed_total{topic="chat"} 1.0',
        'sharded_pubsub_messages_received_total{topic="chat"} 1.0',
        "sharded_pubsub_ssubscribes_total 1.0",
        "sharded_pubsub_sunsubscribes_total 1.0",
    ):
        assert line in text
    await a.close()
    await b.close()
