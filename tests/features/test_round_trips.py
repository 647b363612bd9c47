"""Round trips of the hot paths, counted by :class:`~uwsx.testing.CountingBackend` on every
backend kind: ``round_trips`` is the number of event-loop ticks that issued port operations
(what an auto-pipelining adapter sends as one round trip each) and ``counts`` the operations.

Budgets (GitHub issue 5): a replay publish is 1; a presence join of a new user is 1 (write,
snapshot read and the cross-instance event issued together); N bus publishes in one tick are 1
``publish_many``; ``publish_batched`` of 50 messages is 1 ``publish``. A presence leave that
leaves the user held elsewhere is 1; the leave of the last holder anywhere is 2, because its
one leave event may only go out once the atomic removal said "last" (see the presence module
docstring); a leave-all is those 2 whatever the number of topics.

Postgres runs each operation on its own pooled connection, so operations issued in one tick
finish in different ticks and are not applied in issue order: there a join's snapshot may miss
its own write and is read again (2 round trips), and what follows a batch of removals spreads
over the ticks their replies arrive in. Those tests state the Postgres numbers separately.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import Opener, eventually, settle
from uwsx.features.bus import PubSubBus
from uwsx.features.presence import Presence
from uwsx.features.replay import ReplayBuffer
from uwsx.features.sharded_bus import ShardedBus
from uwsx.platform import Message
from uwsx.ports.backend import Backend
from uwsx.testing import CountingBackend, MockConnection, MockPlatform

#: Kinds whose client applies the operations of one tick in issue order and answers them
#: together (the auto-pipelining adapters, and memory).
PIPELINED = frozenset({"memory", "redis", "redis_cluster", "valkey"})


def user(uid: str) -> MockConnection:
    return MockConnection(user_data={"id": uid})


def budget(counting: CountingBackend) -> tuple[int, dict[str, int]]:
    return counting.round_trips, dict(counting.counts)


# -- replay -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("storage", "op"), [("sortedset", "log.append"), ("stream", "stream.append")]
)
async def test_replay_publish_is_one_round_trip(backend: Backend, storage: str, op: str) -> None:
    counting = CountingBackend(backend)
    buf = ReplayBuffer(counting, storage=storage)  # type: ignore[arg-type]
    assert await buf.publish(MockPlatform(), "chat", "msg", {"n": 1}) == 1
    assert budget(counting) == (1, {op: 1})


async def test_replay_publishes_of_one_tick_share_one_round_trip(backend: Backend) -> None:
    counting = CountingBackend(backend)
    buf = ReplayBuffer(counting)
    p = MockPlatform()
    seqs = await asyncio.gather(*(buf.publish(p, "chat", "msg", i) for i in range(16)))
    assert sorted(s for s in seqs if s is not None) == list(range(1, 17))
    assert budget(counting) == (1, {"log.append": 16})


async def test_idempotent_publish_and_its_retry_are_one_round_trip_each(backend: Backend) -> None:
    counting = CountingBackend(backend)
    buf = ReplayBuffer(counting, storage="stream")
    p = MockPlatform()
    first = await buf.publish_idempotent(p, "chat", "msg", 1, producer_id="p", request_id="r")
    assert budget(counting) == (1, {"stream.append_idempotent": 1})
    counting.reset()
    retry = await buf.publish_idempotent(p, "chat", "msg", 1, producer_id="p", request_id="r")
    assert (retry.seq, retry.is_duplicate, first.is_duplicate) == (first.seq, True, False)
    assert budget(counting) == (1, {"stream.append_idempotent": 1})


# -- presence -----------------------------------------------------------------------------


async def warmed(backend: Backend, *topics: str) -> tuple[Presence, MockPlatform]:
    """A presence whose event channels for ``topics`` are already subscribed (a topic new to
    an instance costs one subscribe on top)."""
    presence = Presence(backend)
    p = MockPlatform()
    for topic in topics:
        await presence.join(user("resident"), topic, p)
    return presence, p


async def test_presence_join_of_a_new_user_is_one_round_trip(
    backend: Backend, backend_kind: str
) -> None:
    counting = CountingBackend(backend)
    presence, p = await warmed(counting, "room")
    counting.reset()
    await presence.join(user("alice"), "room", p)
    rounds, counts = budget(counting)
    if backend_kind in PIPELINED:
        assert rounds == 1
    else:  # the snapshot raced the write on another pooled connection: read once more
        assert rounds == counts["kv.map_items"] <= 2
    assert counts == {"kv.map_put": 1, "kv.map_items": rounds, "pubsub.publish": 1}
    assert sorted(p.sent[-1].data) == ["alice", "resident"]  # the snapshot saw the write
    await presence.close()


async def test_presence_join_of_another_tab_is_one_read(backend: Backend) -> None:
    counting = CountingBackend(backend)
    presence, p = await warmed(counting, "room")
    await presence.join(user("alice"), "room", p)
    counting.reset()
    await presence.join(user("alice"), "room", p)
    assert budget(counting) == (1, {"kv.map_items": 1})
    await presence.close()


async def test_presence_concurrent_joins_share_one_round_trip(
    backend: Backend, backend_kind: str
) -> None:
    counting = CountingBackend(backend)
    presence, p = await warmed(counting, "room")
    counting.reset()
    await asyncio.gather(*(presence.join(user(f"u{i}"), "room", p) for i in range(20)))
    rounds, counts = budget(counting)
    assert (counts["kv.map_put"], counts["pubsub.publish"]) == (20, 20)
    if backend_kind in PIPELINED:
        assert rounds == 1
    assert await presence.count("room") == 21
    await presence.close()


async def test_presence_leave_while_held_elsewhere_is_one_round_trip(
    open_backend: Opener,
) -> None:
    counting = CountingBackend(await open_backend())
    a, pa = await warmed(counting, "room")
    b, pb = await warmed(await open_backend(), "room")
    tab = user("alice")
    await a.join(tab, "room", pa)
    await b.join(user("alice"), "room", pb)
    counting.reset()
    await a.leave(tab, pa, "room")
    assert budget(counting) == (1, {"kv.map_remove": 1})
    await a.close()
    await b.close()


async def test_presence_leave_of_the_last_holder_is_removal_then_one_event(
    backend: Backend,
) -> None:
    counting = CountingBackend(backend)
    presence, p = await warmed(counting, "room")
    tab = user("alice")
    await presence.join(tab, "room", p)
    counting.reset()
    await presence.leave(tab, p, "room")
    assert budget(counting) == (2, {"kv.map_remove": 1, "pubsub.publish": 1})
    await presence.close()


async def test_presence_leave_all_is_one_pipeline_of_removals_and_one_publish(
    backend: Backend,
) -> None:
    counting = CountingBackend(backend)
    topics = [f"room-{i}" for i in range(25)]
    presence, p = await warmed(counting, *topics)
    tab = user("alice")
    for topic in topics:
        await presence.join(tab, topic, p)
    counting.reset()
    await presence.leave(tab, p)
    assert budget(counting) == (2, {"kv.map_remove": 25, "pubsub.publish_many": 1})
    assert [await presence.count(t) for t in topics[:3]] == [1, 1, 1]
    await presence.close()


async def test_presence_mass_disconnect_is_one_pipeline_and_one_publish_tick(
    backend: Backend, backend_kind: str
) -> None:
    counting = CountingBackend(backend)
    topics = [f"room-{i}" for i in range(10)]
    presence, p = await warmed(counting, *topics)
    tabs = [user(f"u{i}") for i in range(30)]
    for i, tab in enumerate(tabs):
        await presence.join(tab, topics[i % 10], p)
        await presence.join(tab, topics[(i + 1) % 10], p)
    counting.reset()
    await asyncio.gather(*(presence.leave(tab, p) for tab in tabs))
    rounds, counts = budget(counting)
    assert (counts["kv.map_remove"], counts["pubsub.publish_many"]) == (60, 30)
    if backend_kind == "redis_cluster":
        # One pipeline per primary: their replies land in different ticks, and so do the
        # leave events that wait for them (at most one publish tick per primary).
        assert rounds <= 1 + 3
    elif backend_kind in PIPELINED:
        assert rounds == 2
    await presence.close()


async def test_presence_heartbeat_is_one_round_trip(backend: Backend) -> None:
    counting = CountingBackend(backend)
    topics = ["a", "b", "c"]
    presence, _ = await warmed(counting, *topics)
    counting.reset()
    await presence.beat()
    assert budget(counting) == (1, {"kv.map_put_many": 3, "kv.map_items": 3})
    await presence.close()


# -- bus ----------------------------------------------------------------------------------


async def relayed(counting: CountingBackend, op: str) -> None:
    await eventually(lambda: counting.counts[op] > 0, what=op)
    await settle()


async def test_bus_publishes_of_one_tick_are_one_publish_many(backend: Backend) -> None:
    counting = CountingBackend(backend)
    bus = PubSubBus(counting)
    w = bus.wrap(MockPlatform())
    for i in range(100):
        w.publish("chat", "msg", i)
    await relayed(counting, "pubsub.publish_many")
    assert budget(counting) == (1, {"pubsub.publish_many": 1})
    await bus.close()


async def test_bus_publish_batched_of_fifty_is_one_publish(backend: Backend) -> None:
    counting = CountingBackend(backend)
    bus = PubSubBus(counting)
    bus.wrap(MockPlatform()).publish_batched([Message("chat", "msg", i) for i in range(50)])
    await relayed(counting, "pubsub.publish")
    assert budget(counting) == (1, {"pubsub.publish": 1})
    await bus.close()


@pytest.mark.needs("sharded_pubsub")
async def test_sharded_bus_publishes_of_one_tick_are_one_publish_many(backend: Backend) -> None:
    counting = CountingBackend(backend)
    bus = ShardedBus(counting, shard_key=lambda topic: topic.split(":")[0])
    w = bus.wrap(MockPlatform())
    for i in range(100):
        w.publish(f"shard{i % 4}:room", "msg", i)
    w.publish_batched([Message(f"shard{i % 4}:room", "msg", i) for i in range(50)])
    await relayed(counting, "pubsub.publish_many")
    assert budget(counting) == (1, {"pubsub.publish_many": 1})
    await bus.close()
