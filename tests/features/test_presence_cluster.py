"""Presence across instances: seed spec §7.9.19, 23, 26-34 (two instances sharing one storage),
the §23 regressions (B1 anonymous keys, crash leaves, inbound validation) and the PR-1..PR-3
invariants. Skipped: §7.9.25 and the storage-shape halves of §7.9.26/28/32 (Redis hash layout
and TTL values); §7.9.27's "< 100 ms" timing (no timing assertions in tests).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.features.presence_support import diffs, user
from tests.helpers import Opener, eventually, eventually_async, settle
from uwsx.features.presence import Presence
from uwsx.metrics import Metrics
from uwsx.ports.backend import Backend
from uwsx.reliability import CircuitBreaker
from uwsx.testing import (
    FaultyBackend,
    ManualClock,
    MockConnection,
    MockPlatform,
    Published,
)


def joined_keys(p: MockPlatform, topic: str = "room") -> set[str]:
    """What a client that saw every frame of ``p`` believes is present."""
    view: dict[str, Any] = {}
    for s in p.sent:
        if s.event == "presence_state" and s.topic == "__presence:" + topic:
            view = dict(s.data)
    for d in diffs(p, topic):
        view.update(d.data["joins"])
        for key in d.data["leaves"]:
            view.pop(key, None)
    return set(view)


async def pair(
    open_backend: Opener, **opts: Any
) -> tuple[Presence, MockPlatform, Presence, MockPlatform]:
    return (
        Presence(await open_backend(), **opts),
        MockPlatform(),
        Presence(await open_backend(), **opts),
        MockPlatform(),
    )


async def _count(presence: Presence, topic: str, n: int) -> bool:
    return await presence.count(topic) == n


# -- two instances (§7.9.23, 26, 28, 30, 31, 34) ---------------------------------------------------


async def test_user_on_two_instances_leaves_only_when_both_left(open_backend: Opener) -> None:
    a, pa, b, pb = await pair(open_backend)
    wa, wb = user("alice"), user("alice")
    await a.join(wa, "room", pa)
    await b.join(wb, "room", pb)
    await settle()
    a.flush_diffs()
    b.flush_diffs()
    pa.reset()
    pb.reset()
    await a.leave(wa, pa)
    await settle()
    a.flush_diffs()
    b.flush_diffs()
    assert (diffs(pa), diffs(pb), await b.count("room")) == ([], [], 1)
    await b.leave(wb, pb)
    await eventually(lambda: len(diffs(pb)) == 1)
    assert diffs(pb)[0].data["leaves"] == {"alice": {"id": "alice"}}
    assert await a.count("room") == 0
    await a.close()
    await b.close()


async def test_concurrent_leaves_of_one_user_announce_exactly_one_leave(
    open_backend: Opener,
) -> None:
    fa, fb = FaultyBackend(await open_backend()), FaultyBackend(await open_backend())
    a, b = Presence(fa), Presence(fb)
    pa, pb = MockPlatform(), MockPlatform()
    wa, wb = user("alice"), user("alice")
    await a.join(wa, "room", pa)
    await b.join(wb, "room", pb)
    await asyncio.gather(a.leave(wa, pa), b.leave(wb, pb))
    leaves = [
        call
        for faulty in (fa, fb)
        for call in faulty.faults.called("pubsub.publish")
        if json.loads(call.args[1])["event"] == "leave"
    ]
    assert len(leaves) == 1
    assert await a.count("room") == 0
    await a.close()
    await b.close()


async def test_two_tabs_count_once_and_leave_once(open_backend: Opener) -> None:
    a, pa, b, pb = await pair(open_backend)
    observer = MockConnection()
    await b.sync(observer, "room", pb)
    t1, t2 = user("alice"), user("alice")
    await a.join(t1, "room", pa)
    await a.join(t2, "room", pa)
    await eventually(lambda: joined_keys(pb) == {"alice"})
    assert await b.count("room") == 1
    await a.leave(t1, pa)
    await a.leave(t2, pa)
    await eventually(lambda: joined_keys(pb) == set())
    assert await b.count("room") == 0
    assert sum(len(d.data["leaves"]) for d in diffs(pb)) == 1
    await a.close()
    await b.close()


async def test_newest_data_wins_across_instances(open_backend: Opener, clock: ManualClock) -> None:
    a, pa, b, pb = await pair(open_backend, select=lambda u: {"name": u.get("name")})
    await a.join(user("alice", "Alice"), "room", pa)
    await clock.advance(1.0)
    await b.join(user("alice", "Alice (newer)"), "room", pb)
    assert await a.list("room") == [{"name": "Alice (newer)"}]
    await a.close()
    await b.close()


async def test_many_concurrent_joins_are_all_counted(open_backend: Opener) -> None:
    a, pa, b, pb = await pair(open_backend)
    await asyncio.gather(
        *((a if i % 2 else b).join(user(f"u{i}"), "room", pa if i % 2 else pb) for i in range(100))
    )
    assert await a.count("room") == 100
    await a.close()
    await b.close()


async def test_remote_joins_reach_clients_only_as_diffs(open_backend: Opener) -> None:
    a, pa, b, pb = await pair(open_backend)
    await b.join(user("bootstrap"), "room", pb)
    await settle()
    b.flush_diffs()
    pb.reset()
    for i in range(10):
        await a.join(user(f"u{i}"), "room", pa)
    await eventually(lambda: joined_keys(pb) >= {f"u{i}" for i in range(10)})
    assert {m.event for m in pb.published} == {"presence_diff"}
    assert len(diffs(pb)) <= 10
    await a.close()
    await b.close()


async def test_a_leave_among_many_users_is_announced_once(open_backend: Opener) -> None:
    a, pa, b, pb = await pair(open_backend)
    await asyncio.gather(*(b.join(user(f"noise{i}"), "room", pb) for i in range(200)))
    alice = user("alice")
    await a.join(alice, "room", pa)
    await settle()
    a.flush_diffs()
    pa.reset()
    await a.leave(alice, pa)
    await settle()
    a.flush_diffs()
    assert [d.data["leaves"] for d in diffs(pa)] == [{"alice": {"id": "alice"}}]
    await a.close()
    await b.close()


# -- crashes, TTL and reconciliation (§7.9.29, 32; §7.8 / §23 design improvement) -----------------


async def test_heartbeat_keeps_entries_alive(open_backend: Opener, clock: ManualClock) -> None:
    a = Presence(await open_backend(), heartbeat=0.3, ttl=1.0)
    await a.join(user("alice"), "room", MockPlatform())
    for _ in range(20):
        await clock.advance(0.3)
    assert await a.count("room") == 1
    await a.close()


async def test_crashed_instances_users_expire_and_remote_clients_get_a_leave(
    open_backend: Opener, clock: ManualClock
) -> None:
    a, pa, b, pb = await pair(open_backend, heartbeat=0.3, ttl=1.0)
    await b.join(user("bob"), "room", pb)
    observer = MockConnection()
    await b.sync(observer, "room", pb)
    await a.join(user("ghost"), "room", pa)
    await eventually(lambda: joined_keys(pb) == {"bob", "ghost"})
    assert await b.count("room") == 2
    await a.close()  # a crash: no leave, the heartbeat just stops

    async def converged() -> bool:
        b.flush_diffs()
        return joined_keys(pb) == {"bob"} and await b.list("room") == [{"id": "bob"}]

    await eventually_async(converged, step=lambda: clock.advance(0.3), what="leave of ghost")
    assert b.stats().stale_cleaned_total == 1
    assert diffs(pb)[-1].data["leaves"] == {"ghost": {"id": "ghost"}}
    await b.close()


async def test_leave_skipped_while_the_breaker_was_open_is_announced_after_ttl(
    open_backend: Opener, clock: ManualClock
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=0.1)
    a = Presence(await open_backend(), heartbeat=0.3, ttl=1.0, breaker=breaker)
    b = Presence(await open_backend(), heartbeat=0.3, ttl=1.0)
    pa, pb = MockPlatform(), MockPlatform()
    await b.sync(MockConnection(), "room", pb)
    alice = user("alice")
    await a.join(alice, "room", pa)
    await eventually(lambda: joined_keys(pb) == {"alice"})
    breaker.failure()
    await a.leave(alice, pa)  # soft-fail: no storage call, no leave announced

    async def gone() -> bool:
        b.flush_diffs()
        return joined_keys(pb) == set()

    await eventually_async(gone, step=lambda: clock.advance(0.3), what="leave after ttl")
    await a.close()
    await b.close()


@pytest.mark.needs("key_expiry_events")
async def test_keyspace_mode_sends_an_empty_state_when_a_topic_map_expires(
    open_backend: Opener, clock: ManualClock
) -> None:
    a, pa, b, pb = await pair(open_backend, heartbeat=0.3, ttl=1.0, keyspace_notifications=True)
    await b.sync(MockConnection(), "room", pb)
    await a.join(user("alice"), "room", pa)
    raw = await open_backend()
    assert raw.kv is not None
    await raw.kv.set("unrelated", "x", ttl=0.5)
    await settle()
    await a.close()

    def empty_states() -> list[Published]:
        return [m for m in pb.published if m.event == "presence_state"]

    async def expired() -> bool:
        return bool(empty_states())

    await eventually_async(expired, step=lambda: clock.advance(0.3), what="empty state")
    assert empty_states() == [Published("__presence:room", "presence_state", {}, relay=False)]
    await b.close()


async def test_without_keyspace_mode_no_expiry_subscription_exists(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    presence = Presence(faulty)
    await presence.join(user("1"), "room", MockPlatform())
    assert faulty.faults.called("pubsub.subscribe_expired") == []
    await presence.close()


# -- zombies, anonymous keys, probing, clear (§7.9.17, 33; §23 B1, §23.3.5) ------------------------


async def test_heartbeat_probe_leaves_dead_connections(
    backend: Backend, clock: ManualClock
) -> None:
    presence = Presence(backend, heartbeat=0.3, ttl=1.0)
    p, ws, other = MockPlatform(), user("zombie"), user("live")
    await presence.join(ws, "room", p)
    await presence.join(other, "room", p)
    ws.close()
    await clock.advance(0.3)
    await eventually(lambda: any(d.data["leaves"] for d in diffs(p)))
    assert await presence.count("room") == 1
    await presence.close()


async def test_anonymous_users_of_two_instances_never_merge(open_backend: Opener) -> None:
    a, pa, b, pb = await pair(open_backend)
    await a.join(MockConnection(), "room", pa)
    await b.join(MockConnection(), "room", pb)
    assert await a.count("room") == 2
    await a.close()
    await b.close()


async def test_events_keep_arriving_after_a_probing_join(
    open_backend: Opener, clock: ManualClock
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1.0)
    a = Presence(await open_backend(), breaker=breaker)
    b = Presence(await open_backend())
    pa, pb = MockPlatform(), MockPlatform()
    breaker.failure()
    await clock.advance(1.0)
    await a.join(user("1"), "room", pa)
    assert breaker.state == "healthy"
    await b.join(user("remote"), "room", pb)
    await eventually(lambda: "remote" in joined_keys(pa))
    await a.close()
    await b.close()


async def test_clear_removes_every_topic_and_nothing_else(open_backend: Opener) -> None:
    a, pa, b, pb = await pair(open_backend)
    await a.join(user("1"), "room-1", pa)
    await b.join(user("2"), "room-2", pb)
    raw = await open_backend()
    assert raw.kv is not None
    await raw.kv.set("outside", "keep")
    await a.clear()
    assert (await b.count("room-1"), await b.count("room-2")) == (0, 0)
    assert await raw.kv.get("outside") == "keep"
    await a.close()
    await b.close()


# -- PR-2: a read in flight never resurrects a user whose leave arrived meanwhile ------------------


async def test_reconcile_read_never_resurrects_a_user_that_left_meanwhile(
    open_backend: Opener,
) -> None:
    fb = FaultyBackend(await open_backend())
    a, b = Presence(await open_backend()), Presence(fb)
    pa, pb = MockPlatform(), MockPlatform()
    await b.sync(MockConnection(), "room", pb)
    alice = user("alice")
    await a.join(alice, "room", pa)
    await eventually(lambda: joined_keys(pb) == {"alice"})
    gate = fb.faults.gate("kv.map_items", after=True)
    beat = asyncio.ensure_future(b.beat())
    await eventually(lambda: len(fb.faults.answered("kv.map_items")) == 2)
    await a.leave(alice, pa)
    await eventually(lambda: joined_keys(pb) == set())
    gate.set()
    await beat
    b.flush_diffs()
    assert joined_keys(pb) == set()
    assert not any("alice" in d.data["joins"] for d in diffs(pb)[-1:])
    await a.close()
    await b.close()


async def test_metrics_of_two_instances(open_backend: Opener) -> None:
    ma, mb = Metrics(), Metrics()
    a, b = Presence(await open_backend(), metrics=ma), Presence(await open_backend(), metrics=mb)
    pa, pb = MockPlatform(), MockPlatform()
    alice = user("alice")
    await a.join(alice, "room", pa)
    await b.join(user("bob"), "room", pb)
    await a.leave(alice, pa)
    await settle()
    assert 'presence_joins_total{topic="room"} 1.0' in ma.serialize()
    assert 'presence_leaves_total{topic="room"} 1.0' in ma.serialize()
    assert 'presence_leaves_total{topic="room"}' not in mb.serialize()
    await a.close()
    await b.close()
