"""Presence on one instance: seed spec §7.9 acceptance statements 1-22 and 24, on every backend
kind with kv and pubsub ports (two-instance statements and regressions are in
``test_presence_cluster.py``). Time is a manual clock.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.features.presence_support import diffs, flushed, pick, states, user
from tests.helpers import Opener, eventually, settle
from uwsx.errors import UnsupportedBackendError
from uwsx.features.presence import Presence, PresenceStats
from uwsx.metrics import Metrics
from uwsx.ports.backend import Backend
from uwsx.testing import (
    FaultyBackend,
    ManualClock,
    MockConnection,
    MockPlatform,
    Published,
)

# -- options (§7.9.1) ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"heartbeat": 0}, "heartbeat"),
        ({"heartbeat": -1}, "heartbeat"),
        ({"heartbeat": "fast"}, "heartbeat"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": -1}, "ttl"),
        ({"heartbeat": 10.0, "ttl": 5.0}, "heartbeat must be shorter than ttl"),
        ({"select": "identity"}, "select must be a function"),
        ({"key": ""}, "key"),
    ],
)
async def test_invalid_options_name_the_argument(
    backend: Backend, opts: dict[str, Any], message: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        Presence(backend, **opts)


async def test_public_surface(backend: Backend) -> None:
    p = Presence(backend)
    for name in (
        "join",
        "leave",
        "sync",
        "list",
        "count",
        "stats",
        "flush_diffs",
        "clear",
        "close",
    ):
        assert callable(getattr(p, name))
    for hook in ("subscribe", "unsubscribe", "close"):
        assert callable(getattr(p.hooks, hook))
    await p.close()


async def test_keyspace_mode_needs_the_capability(backend: Backend) -> None:
    with pytest.raises(UnsupportedBackendError, match="key_expiry_events"):
        Presence(FaultyBackend(backend, capabilities=frozenset()), keyspace_notifications=True)


# -- joining (§7.9.2-7) ----------------------------------------------------------------------------


async def test_join_sends_one_state_and_subscribes(backend: Backend) -> None:
    presence = Presence(backend, select=pick)
    p, ws = MockPlatform(), user("1", "Alice")
    await presence.join(ws, "room", p)
    [state] = states(p)
    assert (state.conn, state.topic) == (ws, "__presence:room")
    assert state.data == {"1": {"id": "1", "name": "Alice"}}
    assert ws.is_subscribed("__presence:room")
    await presence.close()


async def test_second_user_gives_one_diff_with_relay_false(backend: Backend) -> None:
    presence = Presence(backend, select=pick)
    p = MockPlatform()
    await presence.join(user("1", "Alice"), "room", p)
    await flushed(presence)
    p.reset()
    await presence.join(user("2", "Bob"), "room", p)
    presence.flush_diffs()
    assert diffs(p) == [
        Published(
            "__presence:room",
            "presence_diff",
            {"joins": {"2": {"id": "2", "name": "Bob"}}, "leaves": {}},
            relay=False,
        )
    ]
    await presence.close()


async def test_concurrent_joins_coalesce_into_one_diff_per_topic(backend: Backend) -> None:
    import asyncio

    presence = Presence(backend, select=pick)
    p = MockPlatform()
    await asyncio.gather(*(presence.join(user(i), "room", p) for i in ("1", "2", "3")))
    await asyncio.gather(presence.join(user("4"), "a", p), presence.join(user("5"), "b", p))
    presence.flush_diffs()
    frames = [sorted(d.data["joins"]) for d in diffs(p)]
    assert sorted(k for f in frames for k in f) == ["1", "2", "3"]
    if backend.name == "memory":
        # Joins that finish in one event-loop tick share one frame; over a network the
        # replies may land in different ticks, and then so do the frames.
        assert frames == [["1", "2", "3"]]
    assert len(diffs(p, "a")) == len(diffs(p, "b")) == 1
    await presence.close()


async def test_repeated_and_system_topic_joins_do_nothing(backend: Backend) -> None:
    presence = Presence(backend)
    p, ws = MockPlatform(), user("1")
    await presence.join(ws, "room", p)
    await flushed(presence)
    p.reset()
    await presence.join(ws, "room", p)
    await presence.join(ws, "__internal", p)
    await flushed(presence)
    assert (p.published, p.sent) == ([], [])
    await presence.close()


async def test_user_data_is_selected_and_deeply_stripped(backend: Backend) -> None:
    p = MockPlatform()
    picky = Presence(backend, select=pick)
    await picky.join(user("1", "A", secret="s"), "room", p)
    assert states(p)[-1].data == {"1": {"id": "1", "name": "A"}}
    default = Presence(backend)
    rich = MockConnection(
        user_data={
            "id": "2",
            "__internal": 1,
            "token": "t",
            "password": "p",
            "sessionId": "s",
            "meta": {"__secret": 1, "visible": "y"},
            "__subscriptions": ["x"],
            "remoteAddress": "1.2.3.4",
        }
    )
    await default.join(rich, "other", p)
    assert states(p)[-1].data["2"] == {"id": "2", "meta": {"visible": "y"}}
    identity = Presence(backend, select=lambda u: u)
    nested = user("3", profile={"token": "x", "authToken": "y", "ok": 1})
    await identity.join(nested, "third", p)
    assert states(p)[-1].data["3"] == {"id": "3", "profile": {"ok": 1}}
    for presence in (picky, default, identity):
        await presence.close()


async def test_changed_data_from_a_new_tab_is_an_update(backend: Backend) -> None:
    presence = Presence(backend, select=pick)
    p = MockPlatform()
    await presence.join(user("1", "Alice"), "room", p)
    await flushed(presence)
    p.reset()
    await presence.join(user("1", "Alice"), "room", p)
    await flushed(presence)
    assert diffs(p) == []
    await presence.join(user("1", "Alicia"), "room", p)
    await flushed(presence)
    [diff] = diffs(p)
    assert diff.data["joins"]["1"]["name"] == "Alicia"
    await presence.close()


# -- leaving (§7.9.8-10, 22) -----------------------------------------------------------------------


async def test_multi_tab_leave_only_announces_the_last_tab(backend: Backend) -> None:
    presence = Presence(backend, select=pick)
    p = MockPlatform()
    tab_a, tab_b = user("1", "Alice"), user("1", "Alice")
    await presence.join(tab_a, "room", p)
    await flushed(presence)
    p.reset()
    await presence.join(tab_b, "room", p)
    await flushed(presence)
    assert (diffs(p), await presence.count("room")) == ([], 1)
    await presence.leave(tab_a, p, "room")
    await flushed(presence)
    assert (diffs(p), await presence.count("room")) == ([], 1)
    await presence.leave(tab_b, p, "room")
    await flushed(presence)
    [diff] = diffs(p)
    assert diff.data == {"joins": {}, "leaves": {"1": {"id": "1", "name": "Alice"}}}
    await presence.close()


async def test_per_topic_leave_touches_only_that_topic(backend: Backend) -> None:
    presence = Presence(backend)
    p, ws = MockPlatform(), user("1")
    await presence.join(ws, "room-a", p)
    await presence.join(ws, "room-b", p)
    await flushed(presence)
    p.reset()
    await presence.leave(ws, p, "room-a")
    await presence.leave(ws, p, "unknown")
    await presence.leave(user("9"), p)
    await flushed(presence)
    assert [d.topic for d in diffs(p, "room-a") + diffs(p, "room-b")] == ["__presence:room-a"]
    assert (ws.is_subscribed("__presence:room-a"), ws.is_subscribed("__presence:room-b")) == (
        False,
        True,
    )
    await presence.close()


async def test_leave_all_announces_every_topic(backend: Backend) -> None:
    presence = Presence(backend, select=pick)
    p, ws = MockPlatform(), user("1", "Alice")
    await presence.join(ws, "room-a", p)
    await presence.join(ws, "room-b", p)
    await flushed(presence)
    p.reset()
    await presence.leave(ws, p)
    await flushed(presence)
    for topic in ("room-a", "room-b"):
        [diff] = diffs(p, topic)
        assert diff.data["leaves"] == {"1": {"id": "1", "name": "Alice"}}
    await presence.close()


async def test_leaving_tab_restores_the_remaining_tabs_data(backend: Backend) -> None:
    presence = Presence(backend, select=pick)
    p = MockPlatform()
    old, new = user("1", "Alice (old)"), user("1", "Alice (new)")
    await presence.join(old, "room", p)
    await presence.join(new, "room", p)
    await flushed(presence)
    p.reset()
    await presence.leave(new, p, "room")
    await flushed(presence)
    [diff] = diffs(p)
    assert (diff.data["joins"]["1"]["name"], diff.data["leaves"]) == ("Alice (old)", {})
    p.reset()
    other = user("1", "Alice (old)")
    await presence.join(other, "room", p)
    await presence.leave(old, p, "room")
    await flushed(presence)
    assert diffs(p) == []
    await presence.close()


async def test_leaving_the_newest_of_three_tabs_restores_the_previous(backend: Backend) -> None:
    presence = Presence(backend, select=pick)
    p = MockPlatform()
    tabs = [user("1", f"A{i}") for i in range(3)]
    for tab in tabs:
        await presence.join(tab, "room", p)
    await flushed(presence)
    p.reset()
    await presence.leave(tabs[2], p, "room")
    await flushed(presence)
    assert diffs(p)[0].data["joins"]["1"]["name"] == "A1"
    await presence.close()


async def test_leave_all_restores_shared_topics_and_leaves_solo_ones(backend: Backend) -> None:
    presence = Presence(backend, select=pick)
    p = MockPlatform()
    old, new = user("1", "old"), user("1", "new")
    await presence.join(old, "room-a", p)
    await presence.join(new, "room-a", p)
    await presence.join(new, "room-b", p)
    await flushed(presence)
    p.reset()
    await presence.leave(new, p)
    await flushed(presence)
    assert diffs(p, "room-a")[0].data == {"joins": {"1": {"id": "1", "name": "old"}}, "leaves": {}}
    assert diffs(p, "room-b")[0].data == {"joins": {}, "leaves": {"1": {"id": "1", "name": "new"}}}
    await presence.close()


# -- sync, list, count (§7.9.11, 14) ---------------------------------------------------------------


async def test_sync_observes_without_being_counted(backend: Backend) -> None:
    presence = Presence(backend, select=pick)
    p = MockPlatform()
    await presence.join(user("1", "Alice"), "room", p)
    observer = MockConnection()
    p.reset()
    await presence.sync(observer, "room", p)
    await presence.sync(observer, "empty", p)
    assert [(s.topic, s.data) for s in states(p)] == [
        ("__presence:room", {"1": {"id": "1", "name": "Alice"}}),
        ("__presence:empty", {}),
    ]
    assert observer.is_subscribed("__presence:room")
    assert await presence.count("room") == 1
    await presence.close()


async def test_list_and_count(backend: Backend) -> None:
    presence = Presence(backend, select=pick)
    p = MockPlatform()
    await presence.join(user("2", "Bob"), "room", p)
    await presence.join(user("1", "Alice"), "room", p)
    assert sorted(d["id"] for d in await presence.list("room")) == ["1", "2"]
    assert (
        await presence.count("room"),
        await presence.list("nope"),
        await presence.count("nope"),
    ) == (
        2,
        [],
        0,
    )
    await presence.close()


# -- remote events (§7.9.12-13, 24) ---------------------------------------------------------------


def envelope(event: str, key: str, data: Any, topic: str = "room", sender: str = "other") -> str:
    return json.dumps(
        {
            "instanceId": sender,
            "topic": topic,
            "event": event,
            "payload": {"key": key, "data": data},
        }
    )


def backend_is_remote(backend: Backend) -> bool:
    return backend.name != "memory"


async def joined_with_raw(
    open_backend: Opener, **opts: Any
) -> tuple[Presence, MockPlatform, Backend]:
    presence = Presence(await open_backend(), **opts)
    p = MockPlatform()
    await presence.join(user("1"), "room", p)
    await flushed(presence)
    p.reset()
    return presence, p, await open_backend()


async def test_remote_join_then_leave_in_one_tick_is_one_leave(open_backend: Opener) -> None:
    metrics = Metrics()
    presence, p, raw = await joined_with_raw(open_backend, metrics=metrics)
    assert raw.pubsub is not None
    await raw.pubsub.publish_many(
        [
            ("presence:events:room", envelope("join", "remote", {"id": "remote"})),
            ("presence:events:room", envelope("leave", "remote", {"id": "remote"})),
        ]
    )
    await eventually(lambda: len(diffs(p)) == 1)
    assert diffs(p)[0].data == {"joins": {}, "leaves": {"remote": {"id": "remote"}}}
    assert 'presence_diff_coalesced_total{topic="room"} 1.0' in metrics.serialize()
    await presence.close()


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("join", {"joins": {"remote": {"id": "remote"}}, "leaves": {}}),
        ("updated", {"joins": {"remote": {"id": "remote"}}, "leaves": {}}),
        ("leave", {"joins": {}, "leaves": {"remote": {"id": "remote"}}}),
    ],
)
async def test_remote_events_become_diffs(
    open_backend: Opener, event: str, expected: dict[str, Any]
) -> None:
    presence, p, raw = await joined_with_raw(open_backend)
    assert raw.pubsub is not None
    await raw.pubsub.publish("presence:events:room", envelope(event, "remote", {"id": "remote"}))
    await eventually(lambda: len(diffs(p)) == 1)
    assert diffs(p)[0] == Published("__presence:room", "presence_diff", expected, relay=False)
    await presence.close()


async def test_invalid_and_own_envelopes_are_ignored(open_backend: Opener) -> None:
    presence, p, raw = await joined_with_raw(open_backend)
    assert raw.pubsub is not None
    for bad in (
        "{",
        json.dumps([]),
        envelope("join", "x", 1, topic="elsewhere"),
        envelope("explode", "x", 1),
        envelope("join", "x", 1, sender=presence.instance_id),
        json.dumps({"instanceId": "o", "topic": "room", "event": "join", "payload": {"key": 5}}),
    ):
        await raw.pubsub.publish("presence:events:room", bad)
    await raw.pubsub.publish("presence:events:room", envelope("join", "ok", 1))
    await eventually(lambda: len(diffs(p)) == 1)
    assert diffs(p)[0].data["joins"] == {"ok": 1}
    await presence.close()


async def test_remote_events_follow_the_latest_platform(open_backend: Opener) -> None:
    presence, first, raw = await joined_with_raw(open_backend)
    second = MockPlatform()
    await presence.join(user("2"), "room", second)
    await flushed(presence)
    first.reset()
    second.reset()
    assert raw.pubsub is not None
    await raw.pubsub.publish("presence:events:room", envelope("join", "remote", 1))
    await eventually(lambda: len(diffs(second)) == 1)
    assert diffs(first) == []
    await presence.close()


# -- clear, stats, metrics (§7.9.15-16) ------------------------------------------------------------


async def test_clear_resets_storage_and_local_state(open_backend: Opener) -> None:
    presence, p, raw = await joined_with_raw(open_backend)
    ws = user("2")
    await presence.join(ws, "room", p)
    if backend_is_remote(raw):
        # Over a network the join's diff is flushed while the join awaits its event publish.
        presence.flush_diffs()
        p.reset()
    await presence.clear()
    assert (await presence.count("room"), ws.is_subscribed("__presence:room")) == (0, False)
    presence.flush_diffs()
    assert diffs(p) == []  # a diff still pending when clear ran is dropped, not published
    assert raw.pubsub is not None
    await raw.pubsub.publish("presence:events:room", envelope("join", "remote", 1))
    await settle()
    presence.flush_diffs()
    assert diffs(p) == []
    states_before = len(states(p))
    await presence.join(ws, "room", p)
    assert len(states(p)) == states_before + 1
    await presence.close()


async def test_stats_count_distinct_local_users_per_topic(backend: Backend) -> None:
    presence = Presence(backend)
    assert presence.stats() == PresenceStats(0, 0.0, 0)
    p, ws1, ws2 = MockPlatform(), user("1"), user("2")
    await presence.join(ws1, "room-a", p)
    await presence.join(ws1, "room-b", p)
    await presence.join(ws2, "room-a", p)
    assert presence.stats().total_online == 3
    await presence.leave(ws1, p)
    await presence.leave(ws2, p)
    assert presence.stats().total_online == 0
    await presence.close()


async def test_metrics_names_and_labels(backend: Backend, clock: ManualClock) -> None:
    metrics = Metrics()
    presence = Presence(backend, heartbeat=0.05, ttl=1.0, metrics=metrics)
    p, ws = MockPlatform(), user("1")
    await presence.join(ws, "room", p)
    await presence.join(user("2"), "other", p)
    await clock.advance(0.05)
    await eventually(
        lambda: (
            presence.stats().heartbeat_latency >= 0
            and "presence_total_online" in metrics.serialize()
        )
    )
    await presence.leave(ws, p)
    await flushed(presence)
    text = metrics.serialize()
    for line in (
        'presence_total_online{topic="room"} 1.0',
        "presence_heartbeat_latency_ms ",
        "presence_heartbeats_total 1.0",
        'presence_diff_frames_total{topic="room"} 2.0',
        'presence_diff_frames_total{topic="other"} 1.0',
        'presence_joins_total{topic="room"} 1.0',
        'presence_leaves_total{topic="room"} 1.0',
    ):
        assert line in text
    await presence.close()
