"""PubSubBus: seed spec §3.6 acceptance statements, on every backend with a pubsub port."""

from __future__ import annotations

import pytest

from tests.helpers import Opener, eventually, settle
from uwsx import CircuitBrokenError
from uwsx.features.bus import PubSubBus
from uwsx.metrics import Metrics
from uwsx.platform import Message
from uwsx.ports.backend import Backend
from uwsx.reliability import CircuitBreaker
from uwsx.testing import CountingBackend, MockConnection, MockPlatform, Published, Subscribed


async def two_instances(
    open_backend: Opener, **opts: object
) -> tuple[PubSubBus, MockPlatform, PubSubBus, MockPlatform]:
    a_bus, b_bus = PubSubBus(await open_backend(), **opts), PubSubBus(await open_backend(), **opts)  # type: ignore[arg-type]
    a, b = MockPlatform(), MockPlatform()
    await a_bus.activate(a)
    await b_bus.activate(b)
    return a_bus, a, b_bus, b


async def test_wrapped_publish_is_local_at_once_and_returns_local_result(backend: Backend) -> None:
    p = MockPlatform()
    bus = PubSubBus(backend)
    assert bus.wrap(p).publish("chat", "msg", {"text": "hello"}) is True
    assert p.published == [Published("chat", "msg", {"text": "hello"})]
    await bus.close()


async def test_cross_instance_delivery_with_relay_false(open_backend: Opener) -> None:
    a_bus, a, b_bus, b = await two_instances(open_backend)
    a_bus.wrap(a).publish("chat", "msg", {"from": "A"})
    await eventually(lambda: len(b.published) == 1, what="delivery to B")
    assert b.published == [Published("chat", "msg", {"from": "A"}, relay=False)]
    await settle()
    assert a.published == [Published("chat", "msg", {"from": "A"})]  # no echo
    await a_bus.close()
    await b_bus.close()


async def test_batch_returns_results_and_relays_each(open_backend: Opener) -> None:
    a_bus, a, b_bus, b = await two_instances(open_backend)
    results = a_bus.wrap(a).batch([Message("x", "e", 1), Message("y", "e", 2)])
    assert results == [True, True]
    await eventually(lambda: len(b.published) == 2)
    assert [m.topic for m in b.published] == ["x", "y"]
    await a_bus.close()
    await b_bus.close()


@pytest.mark.parametrize("bad", ["nope", None, {"topic": "t"}, [{"topic": "t"}]])
async def test_publish_batched_requires_message_list(backend: Backend, bad: object) -> None:
    bus = PubSubBus(backend)
    with pytest.raises(TypeError, match="publish_batched requires"):
        bus.wrap(MockPlatform()).publish_batched(bad)  # type: ignore[arg-type]


async def test_empty_publish_batched_does_nothing(backend: Backend) -> None:
    counting = CountingBackend(backend)
    p = MockPlatform()
    bus = PubSubBus(counting)
    bus.wrap(p).publish_batched([])
    await settle()
    assert (counting.total, p.published_batches) == (0, [])


async def test_publish_batched_is_one_envelope_and_one_round_trip(open_backend: Opener) -> None:
    a_backend = CountingBackend(await open_backend())
    a_bus, b_bus = PubSubBus(a_backend), PubSubBus(await open_backend())
    a, b = MockPlatform(), MockPlatform()
    await b_bus.activate(b)
    a_backend.reset()
    a_bus.wrap(a).publish_batched([Message("chat", "msg", {"text": c}) for c in "abc"])
    await eventually(lambda: len(b.published_batches) == 1)
    assert a_backend.counts == {"pubsub.publish": 1}
    assert len(a.published_batches) == 1
    assert b.published_batches[0] == [
        Message("chat", "msg", {"text": c}, relay=False) for c in "abc"
    ]
    await a_bus.close()
    await b_bus.close()


async def test_relay_false_entries_stay_local(open_backend: Opener) -> None:
    a_bus, a, b_bus, b = await two_instances(open_backend)
    w = a_bus.wrap(a)
    w.publish_batched([Message("a", "x"), Message("b", "x", relay=False), Message("c", "x")])
    w.publish_batched([Message("only-local", "x", relay=False)])
    w.publish("marker", "x")
    await eventually(lambda: any(m.topic == "marker" for m in b.published))
    assert [m.topic for m in b.published] == ["a", "c", "marker"]
    assert len(a.published_batches) == 2
    await a_bus.close()
    await b_bus.close()


async def test_one_tick_of_publishes_is_one_round_trip_in_order(open_backend: Opener) -> None:
    a_backend = CountingBackend(await open_backend())
    a_bus, b_bus = PubSubBus(a_backend), PubSubBus(await open_backend())
    a, b = MockPlatform(), MockPlatform()
    await b_bus.activate(b)
    a_backend.reset()
    w = a_bus.wrap(a)
    w.publish("t", "e", 1)
    w.publish_batched([Message("t", "e", 2)])
    w.publish("t", "e", 3)
    await eventually(lambda: len(b.published) == 3)
    assert a_backend.counts == {"pubsub.publish_many": 1}
    assert [m.data for m in b.published] == [1, 2, 3]
    await a_bus.close()
    await b_bus.close()


async def test_fifty_message_batch_keeps_order(open_backend: Opener) -> None:
    a_bus, a, b_bus, b = await two_instances(open_backend)
    a_bus.wrap(a).publish_batched([Message("t", "n", i) for i in range(50)])
    await eventually(lambda: len(b.published) == 50)
    assert [m.data for m in b.published] == list(range(50))
    await a_bus.close()
    await b_bus.close()


async def test_own_envelopes_are_suppressed(backend: Backend) -> None:
    metrics = Metrics()
    p = MockPlatform()
    bus = PubSubBus(backend, metrics=metrics)
    await bus.activate(p)
    w = bus.wrap(p)
    w.publish("chat", "msg", 1)
    w.publish_batched([Message("chat", "msg", 2)])
    await eventually(lambda: "pubsub_echo_suppressed_total 2.0" in metrics.serialize())
    assert len(p.published) == 2
    await bus.close()


async def test_hostile_envelopes_are_dropped_and_counted(open_backend: Opener) -> None:
    raw = await open_backend()
    metrics = Metrics()
    bus = PubSubBus(await open_backend(), max_envelope_bytes=1024, metrics=metrics)
    p = MockPlatform()
    await bus.activate(p)
    assert raw.pubsub is not None
    hostile = [
        "not-json",
        "not-json{",
        '["a list"]',
        '{"topic": "no-instance-id", "event": "e"}',
        '{"instanceId": "x", "topic": "chat", "event": "e", "pad": "' + "x" * 2048 + '"}',
        '{"instanceId": "x", "topic": 42, "event": "e"}',
        '{"instanceId": "x", "topic": "bad\\ntopic", "event": "e"}',
        '{"instanceId": "x", "topic": "chat", "event": {"obj": 1}}',
        '{"instanceId": "x", "topic": "__signal:victim", "event": "e"}',
    ]
    for message in hostile:
        await raw.pubsub.publish("uws:pubsub", message)
    await raw.pubsub.publish(
        "uws:pubsub",
        '{"instanceId":"x","batch":[{"topic":"t","event":"e","data":1},'
        '{"topic":"t\\nbad","event":"e","data":2},{"topic":"t","event":"e","data":3}]}',
    )
    await raw.pubsub.publish("uws:pubsub", '{"instanceId":"x","topic":"__realtime","event":"e"}')
    await raw.pubsub.publish("uws:pubsub", '{"instanceId":"x","topic":"ok","event":"e"}')
    await eventually(lambda: any(m.topic == "ok" for m in p.published))
    assert [m.topic for m in p.published] == ["t", "t", "__realtime", "ok"]
    assert [m.data for m in p.published_batches[0]] == [1, 3]
    assert "pubsub_parse_errors_total 10.0" in metrics.serialize()
    await bus.close()


async def test_other_channels_are_ignored_and_custom_channel_works(open_backend: Opener) -> None:
    a_bus = PubSubBus(await open_backend(), channel="custom:chan")
    b_bus = PubSubBus(await open_backend(), channel="custom:chan")
    c_bus, d_bus = PubSubBus(await open_backend()), PubSubBus(await open_backend())
    a, b, c, d = MockPlatform(), MockPlatform(), MockPlatform(), MockPlatform()
    for bus, p in ((a_bus, a), (b_bus, b), (c_bus, c), (d_bus, d)):
        await bus.activate(p)
    c_bus.wrap(c).publish("default-channel", "msg", 1)
    await eventually(lambda: len(d.published) == 1)  # the server has fanned it out
    b_bus.wrap(b).publish("custom", "msg", 2)
    await eventually(lambda: len(a.published) == 1)
    assert [m.topic for m in a.published] == ["custom"]
    for bus in (a_bus, b_bus, c_bus, d_bus):
        await bus.close()


async def test_activate_retargets_and_subscribes_once(open_backend: Opener) -> None:
    own = CountingBackend(await open_backend())
    bus, sender = PubSubBus(own), PubSubBus(await open_backend())
    p1, p2 = MockPlatform(), MockPlatform()
    await bus.activate(p1)
    await bus.activate(p2)
    await bus.activate(p2)
    assert own.counts["pubsub.subscribe"] == 1
    sender.wrap(MockPlatform()).publish("chat", "msg", 1)
    await eventually(lambda: len(p2.published) == 1)
    await settle()
    assert (len(p1.published), len(p2.published)) == (0, 1)
    await bus.close()
    await sender.close()


async def test_failed_activate_can_be_retried_and_reports_to_breaker(backend: Backend) -> None:
    breaker = CircuitBreaker(failure_threshold=5)
    bus = PubSubBus(backend, breaker=breaker)
    pubsub = backend.pubsub
    assert pubsub is not None
    original = pubsub.subscribe

    async def failing(*args: object, **kwargs: object) -> object:
        raise ConnectionError("connection lost")

    pubsub.subscribe = failing  # type: ignore[method-assign,assignment]
    with pytest.raises(ConnectionError, match="connection lost"):
        await bus.activate(MockPlatform())
    assert breaker.failures == 1
    pubsub.subscribe = original  # type: ignore[method-assign]
    await bus.activate(MockPlatform())
    assert bus.active
    assert breaker.failures == 0
    await bus.close()


async def test_degraded_and_recovered_are_local_system_events(backend: Backend) -> None:
    calls: list[str] = []
    breaker = CircuitBreaker(failure_threshold=1)
    bus = PubSubBus(
        backend,
        breaker=breaker,
        on_degraded=lambda: calls.append("d"),
        on_recovered=lambda: calls.append("r"),
    )
    p = MockPlatform()
    await bus.activate(p)
    breaker.failure()
    assert calls == ["d"]
    assert [(m.topic, m.event) for m in p.published] == [("__realtime", "degraded")]
    assert isinstance(p.published[0].data["at"], int)
    breaker.reset()
    assert calls == ["d", "r"]
    assert p.published[-1].event == "recovered"
    await bus.deactivate()
    breaker.failure()
    assert calls == ["d", "r"]  # no callbacks after deactivate
    await bus.close()


@pytest.mark.parametrize("system_channel", [None, "__system"])
async def test_system_channel_option(backend: Backend, system_channel: str | None) -> None:
    calls: list[str] = []
    breaker = CircuitBreaker(failure_threshold=1)
    bus = PubSubBus(
        backend,
        breaker=breaker,
        system_channel=system_channel,
        on_degraded=lambda: calls.append("d"),
    )
    p = MockPlatform()
    await bus.activate(p)
    breaker.failure()
    assert calls == ["d"]
    assert [m.topic for m in p.published] == ([] if system_channel is None else ["__system"])
    await bus.close()


async def test_throwing_on_degraded_still_emits_locally(backend: Backend) -> None:
    def boom() -> None:
        raise RuntimeError("callback bug")

    breaker = CircuitBreaker(failure_threshold=1)
    bus = PubSubBus(backend, breaker=breaker, on_degraded=boom)
    p = MockPlatform()
    await bus.activate(p)
    breaker.failure()
    assert [m.event for m in p.published] == ["degraded"]
    await bus.close()


async def test_hooks_open_subscribes_system_channel_and_activates_once(backend: Backend) -> None:
    counting = CountingBackend(backend)
    bus = PubSubBus(counting)
    p = MockPlatform()
    open_hook = bus.hooks.open
    conns = [MockConnection() for _ in range(3)]
    for conn in conns:
        await open_hook(conn, platform=p)
    assert p.subscribed == [Subscribed(c, "__realtime") for c in conns]
    assert counting.counts["pubsub.subscribe"] == 1
    await open_hook(MockConnection())  # no platform: nothing happens
    await bus.close()


async def test_broken_breaker_skips_relay_but_delivers_locally(backend: Backend) -> None:
    counting = CountingBackend(backend)
    breaker = CircuitBreaker(failure_threshold=1)
    metrics = Metrics()
    bus = PubSubBus(counting, breaker=breaker, metrics=metrics)
    p = MockPlatform()
    breaker.failure()
    bus.wrap(p).publish("chat", "msg", 1)
    await settle()
    assert len(p.published) == 1
    assert counting.total == 0
    assert "pubsub_relay_dropped_total 1.0" in metrics.serialize()
    with pytest.raises(CircuitBrokenError):
        await bus.activate(p)


async def test_relay_counter_only_counts_successful_flushes(backend: Backend) -> None:
    metrics = Metrics()
    breaker = CircuitBreaker(failure_threshold=3)
    bus = PubSubBus(backend, metrics=metrics, breaker=breaker)
    pubsub = backend.pubsub
    assert pubsub is not None

    async def failing(*args: object, **kwargs: object) -> None:
        raise ConnectionError("down")

    pubsub.publish = failing  # type: ignore[method-assign]
    bus.wrap(MockPlatform()).publish("chat", "msg", 1)
    await eventually(lambda: breaker.failures == 1)
    assert "pubsub_messages_relayed_total 0.0" in metrics.serialize()
    await bus.close()


async def test_after_deactivate_nothing_is_delivered(open_backend: Opener) -> None:
    a_bus, a, b_bus, b = await two_instances(open_backend)
    await b_bus.deactivate()
    await b_bus.activate(MockPlatform())  # proves the channel still works for a new target
    a_bus.wrap(a).publish("chat", "msg", 1)
    await settle(50)
    assert b.published == []
    await a_bus.close()
    await b_bus.close()


async def test_non_json_data_is_refused_before_local_publish(backend: Backend) -> None:
    p = MockPlatform()
    bus = PubSubBus(backend)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        bus.wrap(p).publish("chat", "msg", {1, 2})
    assert p.published == []


def test_constructor_validation() -> None:
    from uwsx.testing import memory_backend

    b = memory_backend()
    with pytest.raises(ValueError, match="channel"):
        PubSubBus(b, channel="")
    with pytest.raises(ValueError, match="system_channel"):
        PubSubBus(b, system_channel="")
    with pytest.raises(TypeError, match="on_degraded"):
        PubSubBus(b, on_degraded="x")  # type: ignore[arg-type]


async def test_topic_helper_relays(open_backend: Opener) -> None:
    a_bus, a, b_bus, b = await two_instances(open_backend)
    a_bus.wrap(a).topic("counter").increment(2)
    await eventually(lambda: len(b.published) == 1)
    assert b.published[0] == Published("counter", "increment", 2, relay=False)
    await a_bus.close()
    await b_bus.close()


async def test_json_payload_round_trips(open_backend: Opener) -> None:
    a_bus, a, b_bus, b = await two_instances(open_backend)
    payload = {"nested": {"a": 1, "b": [2, 3, None], "c": "héllo"}, "flag": False, "absent": None}
    a_bus.wrap(a).publish("rooms/42", "msg", payload)
    await eventually(lambda: len(b.published) == 1)
    assert (b.published[0].topic, b.published[0].data) == ("rooms/42", payload)
    await a_bus.close()
    await b_bus.close()


async def test_round_trips_counted_per_tick(backend: Backend) -> None:
    counting = CountingBackend(backend)
    bus = PubSubBus(counting)
    w = bus.wrap(MockPlatform())
    for i in range(10):
        w.publish("t", "e", i)
    await settle()
    assert (counting.total, counting.round_trips) == (1, 1)
    await bus.close()
