"""Every port operation costs exactly one round trip (one write of a request batch: a single
command, one EVALSHA, or a script call with its WAIT), counted on the wire; and operations
issued in one event-loop tick share one round trip (auto-pipelining)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from tests.integration.redis.support import Opener, WireCounter
from tests.integration.redis_servers import RedisDeployment
from uwsx.ports.checks import colocate

T = TypeVar("T")


async def once(wire: WireCounter, what: str, call: Awaitable[T]) -> T:
    wire.reset()
    result = await call
    assert wire.sends == 1, f"{what} cost {wire.sends} round trips"
    return result


async def test_kv_operations_cost_one_round_trip(
    redis_standalone: RedisDeployment, open_redis: Opener, wire: WireCounter
) -> None:
    kv = (await open_redis(redis_standalone.url)).kv
    await once(wire, "set", kv.set("s", "v", ttl=30))
    await once(wire, "get", kv.get("s"))
    await once(wire, "get_many", kv.get_many(["s", "t", "u", "v"]))
    await once(wire, "set_if_absent", kv.set_if_absent("s", "w"))
    await once(wire, "compare_and_set", kv.compare_and_set("s", "v", "w", ttl=30))
    await once(wire, "compare_and_expire", kv.compare_and_expire("s", "w", 20))
    await once(wire, "compare_and_delete", kv.compare_and_delete("s", "w"))
    await once(wire, "incr", kv.incr("n"))
    await once(wire, "incr with ttl", kv.incr("n", ttl=30))
    await once(wire, "expire", kv.expire("n", 10))
    await once(wire, "ttl", kv.ttl("n"))
    await once(wire, "delete", kv.delete("n", "s", "x", "y"))
    await once(wire, "map_put", kv.map_put("m", "a", "1", ttl=30, prefix=""))
    await once(wire, "map_put_many", kv.map_put_many("m", {"b": "2", "c": "3"}, ttl=30))
    await once(wire, "map_get", kv.map_get("m", "a"))
    await once(wire, "map_items", kv.map_items("m"))
    await once(wire, "map_count", kv.map_count("m"))
    await once(wire, "map_remove", kv.map_remove("m", "a", prefix=""))
    await once(wire, "map_sweep", kv.map_sweep("m"))
    tag = colocate("g")
    bounded = kv.map_put_bounded(f"{tag}:m", "x", "1", max_fields=3, unless_key=f"{tag}:c")
    await once(wire, "map_put_bounded", bounded)
    await once(wire, "bucket_take", kv.bucket_take("b", capacity=5, interval=1.0, block=1.0))
    await once(wire, "bucket_ban", kv.bucket_ban("b", duration=1.0, capacity=5, interval=1.0))


async def test_log_stream_and_lock_operations_cost_one_round_trip(
    redis_standalone: RedisDeployment, open_redis: Opener, wire: WireCounter
) -> None:
    backend = await open_redis(redis_standalone.url)
    log, stream, locks = backend.log, backend.stream, backend.locks
    await once(wire, "log.append", log.append("l", "e", "{}", max_size=5, ttl=30))
    await once(wire, "log.read_after", log.read_after("l", 0, limit=5))
    await once(wire, "log.bounds", log.bounds("l"))
    await once(wire, "log.delete", log.delete("l"))
    await once(wire, "stream.append", stream.append("s", "e", "{}", max_size=5))
    idem = stream.append_idempotent(
        "s", "e", "{}", producer_id="p", request_id="r", max_size=5, dedup_ttl=60
    )
    await once(wire, "stream.append_idempotent", idem)
    await once(wire, "stream.read_after", stream.read_after("s", 0))
    await once(wire, "stream.bounds", stream.bounds("s"))
    await once(wire, "stream.delete", stream.delete("s"))
    lease = await once(wire, "locks.acquire", locks.acquire("k", "o", ttl=5))
    assert lease is not None
    await once(wire, "locks.renew", locks.renew("k", "o", ttl=5))
    await once(wire, "locks.holder", locks.holder("k"))
    await once(wire, "locks.seize", locks.seize("k", "p", ttl=5))
    await once(wire, "locks.release", locks.release("k", "p"))
    await once(wire, "pubsub.publish", backend.pubsub.publish("c", "m"))
    await once(wire, "pubsub.publish_many", backend.pubsub.publish_many([("c", "1"), ("d", "2")]))


async def test_queue_operations_cost_one_round_trip(
    redis_standalone: RedisDeployment, open_redis: Opener, wire: WireCounter
) -> None:
    q = (await open_redis(redis_standalone.url)).queue.space("rt")
    job_id = await once(wire, "enqueue", q.enqueue("jobs", "{}"))
    [job] = await once(wire, "claim", q.claim("jobs", limit=3, visibility=30))
    assert job.id == job_id
    await once(wire, "extend", q.extend([(job.id, job.token)], by=5))
    await once(wire, "fail", q.fail([(job.id, job.token)]))
    await once(wire, "pending", q.pending())
    [job] = await q.claim("jobs", limit=1, visibility=30)
    await once(wire, "complete", q.complete([(job.id, job.token)]))
    await once(wire, "clear", q.clear("jobs"))
    insert = q.task_insert("t1", "n", "{}", status="running", fence="f1", fence_ttl=30)
    await once(wire, "task_insert", insert)
    await once(wire, "task_heartbeat", q.task_heartbeat("t1", "f1", fence_ttl=30))
    await once(wire, "task_rearm", q.task_rearm("t1", "f2", attempt=2, fence_ttl=30))
    await once(wire, "task_expire_fence", q.task_expire_fence("t1"))
    await once(wire, "task_reclaim_expired", q.task_reclaim_expired(limit=5, fence_ttl=30))
    await once(wire, "task_claim_pending", q.task_claim_pending(limit=5, fence_ttl=30))
    await once(wire, "task_read", q.task_read("t1"))
    await once(wire, "task_list", q.task_list(name="n"))
    await once(wire, "task_counts", q.task_counts(name="n"))
    await once(wire, "task_commit", q.task_commit("t1", "f2", "{}"))
    await once(wire, "task_fail", q.task_fail("t1", "f2", "late"))
    await once(wire, "task_cleanup", q.task_cleanup(older_than=60))


async def test_operations_of_one_tick_share_one_round_trip(
    redis_standalone: RedisDeployment, open_redis: Opener, wire: WireCounter
) -> None:
    backend = await open_redis(redis_standalone.url)
    kv, log = backend.kv, backend.log
    await kv.get("warm-up")
    wire.reset()
    counters, appended = await asyncio.gather(
        asyncio.gather(*(kv.incr(f"counter:{i % 7}") for i in range(100))),
        asyncio.gather(*(log.append("tick", "e", "{}", max_size=1000) for _ in range(50))),
    )
    assert wire.sends == 1, "150 operations of one tick go out as one pipeline"
    assert sorted(a.seq for a in appended) == list(range(1, 51))
    assert sorted(counters)[-7:] == [14, 14, 14, 14, 14, 15, 15]
    assert await kv.get_many([f"counter:{i}" for i in range(7)]) == [
        "15", "15", "14", "14", "14", "14", "14"
    ]  # fmt: skip


async def test_auto_pipelining_can_be_switched_off(
    redis_standalone: RedisDeployment, open_redis: Opener, wire: WireCounter
) -> None:
    kv = (await open_redis(redis_standalone.url, auto_pipeline=False)).kv
    await asyncio.gather(*(kv.get("warm-up") for _ in range(10)))  # open the connections
    wire.reset()
    await asyncio.gather(*(kv.incr("n") for _ in range(10)))
    assert wire.sends == 10, "without auto-pipelining every operation is its own round trip"
    assert await kv.get("n") == "10"
