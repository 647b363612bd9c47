"""Group: seed spec §10.7 acceptance statements and the §10.6/§23 ghost-member regressions, on
every backend kind with kv and pubsub ports.

Adapted or skipped statements: the join snapshot is the bounded put's own result (one round
trip less), so §10.7.23 (a failing snapshot HGETALL) has no counterpart; §10.7.14/26's planted
stale hash fields become a crashed instance's member expiring (per-field deadlines replace the
stored ``ts``); §10.7.18 deliberately differs: a dissolve whose cluster notification fails
still clears local members (then raises) instead of leaving them behind.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

from tests.features.groups_support import count_is, frames, sent
from tests.helpers import Opener, eventually, eventually_async, settle
from uwsx.errors import CircuitBrokenError
from uwsx.features.groups import Group
from uwsx.features.groups_members import GroupMember
from uwsx.metrics import Metrics
from uwsx.ports.backend import Backend
from uwsx.ports.checks import colocate
from uwsx.reliability import CircuitBreaker
from uwsx.testing import (
    FaultyBackend,
    ManualClock,
    MockConnection,
    MockPlatform,
    Published,
    Sent,
)

# -- construction (§10.7.1) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "opts", "message"),
    [
        ("", {}, "name must be a non-empty string"),
        (1, {}, "name must be a non-empty string"),
        ("g", {"max_members": 0}, "max_members"),
        ("g", {"max_members": 1.5}, "max_members"),
        ("g", {"member_ttl": 0}, "member_ttl"),
        ("g", {"member_ttl": math.inf}, "member_ttl"),
        ("g", {"on_join": "x"}, "on_join must be callable"),
        ("g", {"on_close": 3}, "on_close must be callable"),
        ("g", {"meta": [1]}, "meta must be a mapping"),
    ],
)
async def test_construction_validates_arguments(
    backend: Backend, name: Any, opts: dict[str, Any], message: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        Group(backend, name, **opts)


async def test_math_inf_means_unbounded(backend: Backend) -> None:
    g = Group(backend, "g", max_members=math.inf)
    assert g.max_members is None
    await g.close()


# -- join (§10.7.2-5) --------------------------------------------------------------------------


async def test_join_subscribes_sends_members_and_announces(backend: Backend) -> None:
    g = Group(backend, "lobby")
    p, ws = MockPlatform(), MockConnection()
    assert await g.join(ws, p) is True
    assert ws.is_subscribed("__group:lobby")
    assert await g.count() == 1
    assert sent(p, "members") == [Sent(ws, "__group:lobby", "members", [{"role": "member"}])]
    assert frames(p, "join") == [Published("__group:lobby", "join", {"role": "member"})]
    await g.close()


async def test_roles_and_repeated_join(backend: Backend) -> None:
    g = Group(backend, "lobby")
    p = MockPlatform()
    ws1, ws2, ws3 = MockConnection(), MockConnection(), MockConnection()
    assert await g.join(ws1, p)
    assert await g.join(ws2, p, "admin")
    assert await g.join(ws3, p, "viewer")
    with pytest.raises(ValueError, match='invalid role "superuser"'):
        await g.join(MockConnection(), p, "superuser")
    before = len(p.published)
    assert await g.join(ws1, p) is True
    assert len(p.published) == before
    assert [m.role for m in g.local_members()] == ["member", "admin", "viewer"]
    assert await g.count() == 3
    await g.close()


async def test_capacity_rejects_and_calls_on_full(backend: Backend) -> None:
    full: list[tuple[Any, str]] = []
    joined: list[str] = []
    g = Group(
        backend,
        "small",
        max_members=2,
        on_full=lambda c, r: full.append((c, r)),
        on_join=lambda c, r: joined.append(r),
    )
    p = MockPlatform()
    assert await g.join(MockConnection(), p, "admin")
    assert await g.join(MockConnection(), p)
    third = MockConnection()
    assert await g.join(third, p) is False
    assert (await g.count(), full, joined) == (2, [(third, "member")], ["admin", "member"])
    await g.close()


async def test_concurrent_joins_never_exceed_capacity(open_backend: Opener) -> None:
    groups = [Group(await open_backend(), "race", max_members=3) for _ in range(2)]
    p = MockPlatform()
    results = await asyncio.gather(*(groups[i % 2].join(MockConnection(), p) for i in range(10)))
    assert (results.count(True), results.count(False)) == (3, 7)
    assert await groups[0].count() == 3
    one = Group(await open_backend(), "one", max_members=1)
    pair = await asyncio.gather(one.join(MockConnection(), p), one.join(MockConnection(), p))
    assert sorted(pair) == [False, True]
    assert await one.count() == 1
    for g in (*groups, one):
        await g.close()


# -- leave (§10.7.6) -----------------------------------------------------------------------------


async def test_leave_unsubscribes_announces_and_calls_on_leave(backend: Backend) -> None:
    left: list[tuple[Any, str]] = []
    g = Group(backend, "lobby", on_leave=lambda c, r: left.append((c, r)))
    p, ws = MockPlatform(), MockConnection()
    await g.join(ws, p)
    await g.leave(ws, p)
    await g.leave(MockConnection(), p)
    assert (await g.count(), ws.is_subscribed("__group:lobby")) == (0, False)
    assert frames(p, "leave") == [Published("__group:lobby", "leave", {"role": "member"})]
    assert left == [(ws, "member")]
    await g.close()


# -- messaging (§10.7.7-9) -----------------------------------------------------------------------


async def test_publish_to_all_and_by_role(backend: Backend) -> None:
    g = Group(backend, "lobby")
    p = MockPlatform()
    ws1, ws2, ws3 = MockConnection(), MockConnection(), MockConnection()
    await g.join(ws1, p, "admin")
    await g.join(ws2, p)
    await g.join(ws3, p, "admin")
    p.reset()
    await g.publish(p, "chat", {"text": "hello"})
    assert p.published == [Published("__group:lobby", "chat", {"text": "hello"})]
    await g.publish(p, "secret", 1, role="admin")
    assert [(s.conn, s.event) for s in p.sent] == [(ws1, "secret"), (ws3, "secret")]
    with pytest.raises(ValueError, match="non-reserved"):
        await g.publish(p, "close", None)
    await g.dissolve(p)
    p.reset()
    await g.publish(p, "chat", {"text": "late"})
    assert p.published == []
    await g.close()


async def test_role_filtered_publish_reaches_remote_members_with_that_role(
    open_backend: Opener,
) -> None:
    ga, gb = Group(await open_backend(), "lobby"), Group(await open_backend(), "lobby")
    pa, pb = MockPlatform(), MockPlatform()
    admin, viewer = MockConnection(), MockConnection()
    await gb.join(admin, pb, "admin")
    await gb.join(viewer, pb, "viewer")
    await ga.join(MockConnection(), pa)
    await eventually(lambda: len(frames(pb, "join")) == 3)
    pb.reset()
    await ga.publish(pa, "alert", {"level": 2}, role="admin")
    await ga.publish(pa, "marker", 0)
    await eventually(lambda: len(pb.published) == 1)
    assert pb.sent == [Sent(admin, "__group:lobby", "alert", {"level": 2})]
    assert pb.published == [Published("__group:lobby", "marker", 0, relay=False)]
    await ga.close()
    await gb.close()


async def test_send_local_members_and_has(backend: Backend) -> None:
    g = Group(backend, "lobby")
    p, ws, stranger = MockPlatform(), MockConnection(), MockConnection()
    await g.join(ws, p, "viewer")
    with pytest.raises(ValueError, match="not a member"):
        g.send(p, stranger, "x", 1)
    g.send(p, ws, "hi", 1)
    assert p.sent[-1] == Sent(ws, "__group:lobby", "hi", 1)
    [member] = g.local_members()
    assert isinstance(member, GroupMember)
    assert (member.conn, member.role, g.has(ws), g.has(stranger)) == (ws, "viewer", True, False)
    await g.close()


# -- metadata (§10.7.10) -------------------------------------------------------------------------


async def test_meta_round_trips_as_text_and_merges(backend: Backend) -> None:
    g = Group(backend, "lobby", meta={"game": "chess"})
    assert await g.get_meta() == {"game": "chess"}
    await g.set_meta({"round": 1, "live": True})
    await g.set_meta({"c": "x"})
    assert await g.get_meta() == {"game": "chess", "round": "1", "live": "true", "c": "x"}
    await g.set_meta({})
    assert await g.get_meta() == {}
    await g.close()


async def test_failed_initial_meta_is_retried_unless_newer_data_was_set(
    open_backend: Opener,
) -> None:
    faulty = FaultyBackend(await open_backend())
    faulty.faults.fail("kv.map_put_many", times=1)
    g = Group(faulty, "go", meta={"game": "go"})
    await settle()
    assert await g.get_meta() == {"game": "go"}
    await g.close()
    faulty2 = FaultyBackend(await open_backend())
    faulty2.faults.fail("kv.map_put_many", times=1)
    g2 = Group(faulty2, "chess", meta={"game": "go"})
    await settle()
    await g2.set_meta({"game": "chess"})
    assert await g2.get_meta() == {"game": "chess"}
    await g2.close()


# -- dissolving (§10.7.11-12, 15, 18-19, 21) ---------------------------------------------------


async def test_dissolve_closes_everything_once(backend: Backend) -> None:
    closed: list[int] = []
    g = Group(backend, "lobby", on_close=lambda: closed.append(1))
    p = MockPlatform()
    ws1, ws2 = MockConnection(), MockConnection()
    await g.join(ws1, p)
    await g.join(ws2, p)
    await g.dissolve(p)
    assert frames(p, "close") == [Published("__group:lobby", "close", None)]
    assert not ws1.is_subscribed("__group:lobby")
    assert not ws2.is_subscribed("__group:lobby")
    assert (g.local_members(), closed, g.closed) == ([], [1], True)
    assert await g.join(MockConnection(), p) is False
    await g.dissolve(p)
    assert (closed, await g.count()) == ([1], 0)
    await g.close()


async def test_remote_dissolve_closes_the_peer(open_backend: Opener) -> None:
    closed: list[str] = []
    ga = Group(await open_backend(), "lobby")
    gb = Group(await open_backend(), "lobby", on_close=lambda: closed.append("b"))
    pa, pb = MockPlatform(), MockPlatform()
    ws = MockConnection()
    await gb.join(ws, pb)
    await ga.join(MockConnection(), pa)
    await ga.dissolve(pa)
    await eventually(lambda: closed == ["b"])
    assert (gb.has(ws), ws.is_subscribed("__group:lobby"), gb.closed) == (False, False, True)
    assert frames(pb, "close") == [Published("__group:lobby", "close", None, relay=False)]
    assert await gb.join(MockConnection(), pb) is False
    await ga.close()
    await gb.close()


async def test_a_closed_group_refuses_joins_on_every_instance(open_backend: Opener) -> None:
    ga, gb = Group(await open_backend(), "lobby"), Group(await open_backend(), "lobby")
    await ga.dissolve(MockPlatform())
    ws = MockConnection()
    assert await gb.join(ws, MockPlatform()) is False
    assert gb.has(ws) is False
    raw = await open_backend()
    assert raw.kv is not None
    await raw.kv.set(f"group:{colocate('flagged')}:closed", "1")
    gc = Group(await open_backend(), "flagged")
    assert await gc.join(MockConnection(), MockPlatform()) is False
    for g in (ga, gb, gc):
        await g.close()


async def test_dissolve_under_a_broken_breaker_keeps_the_group_open(open_backend: Opener) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    g1 = Group(await open_backend(), "lobby", breaker=breaker)
    g2 = Group(await open_backend(), "lobby")
    p = MockPlatform()
    breaker.failure()
    with pytest.raises(CircuitBrokenError):
        await g1.dissolve(p)
    breaker.reset()
    assert await g1.join(MockConnection(), p) is True
    await g1.dissolve(p)
    assert await g2.join(MockConnection(), p) is False
    await g1.close()
    await g2.close()


async def test_dissolve_with_a_failing_notification_still_clears_locals(
    open_backend: Opener,
) -> None:
    faulty = FaultyBackend(await open_backend())
    g1 = Group(faulty, "lobby")
    g2 = Group(await open_backend(), "lobby")
    p1, p2 = MockPlatform(), MockPlatform()
    ws1, ws2 = MockConnection(), MockConnection()
    await g1.join(ws1, p1)
    await g2.join(ws2, p2)
    faulty.faults.fail("pubsub.publish", times=1)
    with pytest.raises(Exception, match="injected"):
        await g1.dissolve(p1)
    assert (g1.closed, g1.local_members()) == (True, [])
    assert await Group(await open_backend(), "lobby").join(MockConnection(), p2) is False
    await g1.publish(p1, "chat", 1)
    assert frames(p1, "chat") == []
    assert g2.has(ws2)  # the peer was not told yet
    await g1.dissolve(p1)
    await eventually(lambda: not g2.has(ws2))
    await g1.close()
    await g2.close()


async def test_dissolve_with_a_failing_delete_raises_and_counts(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    breaker = CircuitBreaker(failure_threshold=5)
    g = Group(faulty, "lobby", breaker=breaker)
    p = MockPlatform()
    await g.join(MockConnection(), p)
    faulty.faults.fail("kv.delete", times=1)
    with pytest.raises(Exception, match="injected"):
        await g.dissolve(p)
    assert breaker.failures == 1
    await g.dissolve(p)
    assert (await g.count(), breaker.failures) == (0, 0)
    await g.close()


# -- hooks (§10.7.13) ----------------------------------------------------------------------------


async def test_hooks_act_only_on_the_group_topic(backend: Backend) -> None:
    g = Group(backend, "lobby")
    subscribe, unsubscribe, close = g.hooks.subscribe, g.hooks.unsubscribe, g.hooks.close
    p, ws = MockPlatform(), MockConnection()
    await subscribe(ws, "other", platform=p)
    assert not g.has(ws)
    await subscribe(ws, "__group:lobby", platform=p)
    assert g.has(ws)
    await unsubscribe(ws, "other", platform=p)
    assert g.has(ws)
    await unsubscribe(ws, "__group:lobby", platform=p)
    assert not g.has(ws)
    await subscribe(ws, "__group:lobby", platform=p)
    await close(ws, platform=p)
    assert (g.has(ws), await g.count()) == (False, 0)
    await g.close()


# -- member lifetime (§10.7.14, 20, 26) -------------------------------------------------------


async def test_heartbeat_keeps_live_members_past_their_ttl(
    backend: Backend, clock: ManualClock
) -> None:
    g = Group(backend, "lobby", member_ttl=1.0)
    await g.join(MockConnection(), MockPlatform())
    for _ in range(10):
        await clock.advance(0.34)
    assert await g.count() == 1
    await g.close()


async def test_crashed_instances_members_stop_counting_and_free_capacity(
    open_backend: Opener, clock: ManualClock
) -> None:
    crashed = Group(await open_backend(), "lobby", member_ttl=1.0, max_members=2)
    live = Group(await open_backend(), "lobby", member_ttl=1.0, max_members=2)
    p = MockPlatform()
    await crashed.join(MockConnection(), p)
    await crashed.join(MockConnection(), p)
    await crashed.close()  # no leave: its heartbeat simply stops
    assert await live.join(MockConnection(), p) is False
    await clock.advance(1.1)
    await eventually_async(lambda: count_is(live, 0), step=lambda: clock.advance(0.3))
    assert await live.join(MockConnection(), p) is True
    assert await live.join(MockConnection(), p) is True
    assert await live.count() == 2
    await live.close()


async def test_cross_instance_events_are_republished_with_relay_false(
    open_backend: Opener,
) -> None:
    ga, gb = Group(await open_backend(), "lobby"), Group(await open_backend(), "lobby")
    pa, pb = MockPlatform(), MockPlatform()
    await gb.join(MockConnection(), pb, "viewer")
    pb.reset()
    await ga.join(MockConnection(), pa, "admin")
    await ga.publish(pa, "chat", {"text": "hi"})
    await eventually(lambda: len(pb.published) == 2)
    assert pb.published == [
        Published("__group:lobby", "join", {"role": "admin"}, relay=False),
        Published("__group:lobby", "chat", {"text": "hi"}, relay=False),
    ]
    third = MockConnection()
    await gb.join(third, pb, "viewer")
    [members] = [s for s in pb.sent if s.conn is third]
    assert sorted(m["role"] for m in members.data) == ["admin", "viewer", "viewer"]
    await ga.close()
    await gb.close()


# -- failures (§10.7.16-17, 22, 24-25) ------------------------------------------------------------


async def test_leave_keeps_the_member_when_storage_fails(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    breaker = CircuitBreaker(failure_threshold=2)
    left: list[str] = []
    g = Group(faulty, "lobby", breaker=breaker, on_leave=lambda c, r: left.append(r))
    p, ws = MockPlatform(), MockConnection()
    await g.join(ws, p)
    faulty.faults.fail("kv.map_remove", times=1)
    await g.leave(ws, p)
    assert breaker.failures == 1
    assert (frames(p, "leave"), left, g.has(ws), await g.count()) == ([], [], True, 1)
    breaker.failure()
    breaker.failure()
    assert breaker.state == "broken"
    await g.leave(ws, p)
    assert (frames(p, "leave"), g.has(ws)) == ([], True)
    breaker.reset()
    await g.leave(ws, p)
    assert (g.has(ws), left, breaker.failures) == (False, ["member"], 0)
    await g.close()


async def test_failed_subscription_on_first_join_is_retried(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    breaker = CircuitBreaker(failure_threshold=5)
    g = Group(faulty, "lobby", breaker=breaker)
    p = MockPlatform()
    faulty.faults.fail("pubsub.subscribe", times=1)
    with pytest.raises(Exception, match="injected"):
        await g.join(MockConnection(), p)
    assert breaker.failures == 1
    assert await g.count() == 0
    assert await g.join(MockConnection(), p) is True
    assert (await g.count(), breaker.failures) == (1, 0)
    await g.close()


async def test_join_of_a_closed_connection_rolls_back(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    g = Group(faulty, "lobby")
    p = MockPlatform()
    dead = MockConnection()
    dead.close()
    assert await g.join(dead, p) is False
    assert (g.has(dead), await g.count(), frames(p, "join")) == (False, 0, [])
    faulty.faults.fail("kv.map_remove")
    other = MockConnection()
    other.close()
    with pytest.raises(RuntimeError, match="join rollback failed"):
        await g.join(other, p)
    await g.close()


async def test_breaker_accounting_across_operations(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    breaker = CircuitBreaker(failure_threshold=5)
    g = Group(faulty, "lobby", breaker=breaker)
    p, ws = MockPlatform(), MockConnection()
    faulty.faults.fail("kv.map_put_bounded", times=1)
    with pytest.raises(Exception, match="injected"):
        await g.join(ws, p)
    assert breaker.failures == 1
    assert await g.join(ws, p)
    assert breaker.failures == 0
    await g.dissolve(p)
    assert breaker.failures == 0
    await g.close()


async def test_close_survives_a_failing_unsubscribe(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    g = Group(faulty, "lobby")
    await g.join(MockConnection(), MockPlatform())
    faulty.faults.fail("subscription.close")
    await g.close()
    await g.close()


async def test_invalid_envelopes_are_ignored(open_backend: Opener) -> None:
    raw = await open_backend()
    g = Group(await open_backend(), "lobby")
    p = MockPlatform()
    await g.join(MockConnection(), p)
    p.reset()
    assert raw.pubsub is not None
    for bad in (
        "nope",
        json.dumps([1]),
        json.dumps({"event": "chat"}),
        json.dumps({"instanceId": "x", "event": ""}),
        json.dumps({"instanceId": "x", "event": "__role_filtered", "data": {"role": "root"}}),
    ):
        await raw.pubsub.publish(g.channel, bad)
    await raw.pubsub.publish(g.channel, json.dumps({"instanceId": "x", "event": "ok", "data": 1}))
    await eventually(lambda: len(p.published) == 1)
    assert p.published == [Published("__group:lobby", "ok", 1, relay=False)]
    assert not g.closed
    await g.close()


async def test_metrics_are_labelled_by_group(backend: Backend) -> None:
    metrics = Metrics()
    g = Group(backend, "lobby", max_members=1, metrics=metrics)
    p, ws = MockPlatform(), MockConnection()
    await g.join(ws, p)
    await g.join(MockConnection(), p)
    await g.publish(p, "chat", 1)
    await g.leave(ws, p)
    text = metrics.serialize()
    for name in ("joins", "joins_rejected", "leaves", "publishes"):
        assert f'group_{name}_total{{group="lobby"}} 1.0' in text
    await g.close()
