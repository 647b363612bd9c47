"""The features' round-trip budgets (GitHub issue 5), counted on the wire against a real Redis:
one request write on a redis-py connection is one round trip, and the adapter auto-pipelines
what a feature issues in one event-loop tick. ``tests/features/test_round_trips.py`` checks
the same budgets on every backend kind with the counting proxy; here the socket confirms them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from tests.integration.redis.support import Opener, WireCounter, until
from tests.integration.redis_servers import RedisDeployment
from uwsx.features.bus import PubSubBus
from uwsx.features.presence import Presence
from uwsx.features.replay import ReplayBuffer
from uwsx.features.sharded_bus import ShardedBus
from uwsx.platform import Message
from uwsx.testing import MockConnection, MockPlatform

T = TypeVar("T")


def user(uid: str) -> MockConnection:
    return MockConnection(user_data={"id": uid})


async def sends(wire: WireCounter, call: Awaitable[T]) -> tuple[T, int]:
    wire.reset()
    result = await call
    return result, wire.sends


async def test_replay_publishes_cost_one_round_trip(
    redis_standalone: RedisDeployment, open_redis: Opener, wire: WireCounter
) -> None:
    backend = await open_redis(redis_standalone.url)
    p = MockPlatform()
    zset, stream = ReplayBuffer(backend), ReplayBuffer(backend, storage="stream")
    await zset.publish(p, "warm", "e")  # loads the script once
    await stream.publish(p, "warm", "e")
    assert await sends(wire, zset.publish(p, "chat", "msg", 1)) == (1, 1)
    assert await sends(wire, stream.publish(p, "chat", "msg", 1)) == (1, 1)
    idem = stream.publish_idempotent(p, "chat", "msg", 2, producer_id="p", request_id="r")
    (first, n) = await sends(wire, idem)
    assert (first.seq, first.is_duplicate, n) == (2, False, 1)
    again = stream.publish_idempotent(p, "chat", "msg", 2, producer_id="p", request_id="r")
    (retry, n) = await sends(wire, again)
    assert (retry.seq, retry.is_duplicate, n) == (2, True, 1)
    many = asyncio.gather(*(zset.publish(p, "burst", "msg", i) for i in range(16)))
    seqs, n = await sends(wire, many)
    assert (sorted(s for s in seqs if s is not None), n) == (list(range(1, 17)), 1)


async def test_presence_join_is_one_round_trip_and_leave_all_two(
    redis_standalone: RedisDeployment, open_redis: Opener, wire: WireCounter
) -> None:
    presence = Presence(await open_redis(redis_standalone.url))
    p = MockPlatform()
    topics = [f"room-{i}" for i in range(25)]
    for topic in topics:  # subscribes each topic's event channel (one SUBSCRIBE each)
        await presence.join(user("resident"), topic, p)
    alice = user("alice")
    assert (await sends(wire, presence.join(alice, "room-0", p)))[1] == 1
    assert sorted(p.sent[-1].data) == ["alice", "resident"]
    for topic in topics[1:]:
        await presence.join(alice, topic, p)
    assert (await sends(wire, presence.leave(alice, p)))[1] == 2  # removals, then the events
    assert await presence.count("room-7") == 1
    bob = user("bob")
    await presence.join(bob, "room-0", p)
    assert (await sends(wire, presence.leave(bob, p, "room-0")))[1] == 2
    assert (await sends(wire, presence.beat()))[1] == 1  # 25 refreshes and 25 reads
    await presence.close()


async def test_presence_leave_while_held_elsewhere_is_one_round_trip(
    redis_standalone: RedisDeployment, open_redis: Opener, wire: WireCounter
) -> None:
    a = Presence(await open_redis(redis_standalone.url))
    b = Presence(await open_redis(redis_standalone.url))
    pa, pb = MockPlatform(), MockPlatform()
    tab = user("alice")
    await a.join(tab, "room", pa)
    await b.join(user("alice"), "room", pb)
    await a.join(user("resident"), "room", pa)  # keeps a's channel subscribed
    assert (await sends(wire, a.leave(tab, pa, "room")))[1] == 1
    assert await b.count("room") == 2
    await a.close()
    await b.close()


async def test_bus_tick_is_one_round_trip_and_a_batch_one_publish(
    redis_standalone: RedisDeployment, open_redis: Opener, wire: WireCounter
) -> None:
    a_bus = PubSubBus(await open_redis(redis_standalone.url))
    b_bus = PubSubBus(await open_redis(redis_standalone.url))
    a, b = MockPlatform(), MockPlatform()
    await b_bus.activate(b)
    w = a_bus.wrap(a)
    w.publish("warm", "e")
    await until(lambda: len(b.published) == 1, "the warm-up message")
    wire.reset()
    for i in range(100):
        w.publish("chat", "msg", i)
    await until(lambda: len(b.published) == 101, "100 relayed messages")
    assert wire.sends == 1
    wire.reset()
    w.publish_batched([Message("chat", "batch", i) for i in range(50)])
    await until(lambda: len(b.published_batches) == 1, "the batch")
    assert wire.sends == 1
    assert [m.data for m in b.published_batches[0]] == list(range(50))
    await a_bus.close()
    await b_bus.close()


async def test_sharded_bus_tick_is_one_round_trip(
    redis_standalone: RedisDeployment, open_redis: Opener, wire: WireCounter
) -> None:
    bus = ShardedBus(await open_redis(redis_standalone.url), shard_key=lambda t: t.split(":")[0])
    receiver = ShardedBus(
        await open_redis(redis_standalone.url), shard_key=lambda t: t.split(":")[0]
    )
    r = MockPlatform()
    await receiver.activate(r)
    for shard in range(4):
        await receiver.follow(f"s{shard}:room")
    w = bus.wrap(MockPlatform())
    wire.reset()
    for i in range(100):
        w.publish(f"s{i % 4}:room", "msg", i)
    await until(lambda: len(r.published) == 100, "100 sharded messages")
    assert wire.sends == 1
    await bus.close()
    await receiver.close()
