"""Cursor: seed spec §11.7 acceptance statements and the §11.6/§23 ghost-state regressions, on
every backend kind with kv and pubsub ports. Time is a manual clock (throttles, TTLs).

Adapted statements: §11.7.18's "TTL on the hash" and "ts 10 s old" become "the entry is gone
once ``ttl`` passed" (entries carry per-field deadlines instead of a whole-key EXPIRE plus a
cleanup script); bulk frames are counted in ``cursor_broadcasts_total`` and still published
locally while the breaker is open (§23.2.10, deliberate).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.features.cursor_support import alice, is_empty, on, relays
from tests.helpers import Opener, eventually, eventually_async, settle
from uwsx.errors import CircuitBrokenError
from uwsx.features.cursor import Cursor
from uwsx.metrics import Metrics
from uwsx.ports.backend import Backend
from uwsx.reliability import CircuitBreaker
from uwsx.testing import (
    FaultyBackend,
    ManualClock,
    MockConnection,
    MockPlatform,
)

# -- construction and frames (§11.7.1-3) --------------------------------------------------------


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"throttle": -1}, "throttle"),
        ({"topic_throttle": float("nan")}, "topic_throttle"),
        ({"ttl": 0}, "ttl"),
        ({"select": "id"}, "select must be a function"),
    ],
)
async def test_construction_validates_options(
    backend: Backend, opts: dict[str, Any], message: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        Cursor(backend, **opts)


async def test_first_update_is_published_at_once(backend: Backend) -> None:
    c = Cursor(backend, throttle=0.1, select=lambda u: {"id": u["id"], "name": u["name"]})
    p = MockPlatform()
    c.update(alice(secret="s"), "canvas", {"x": 10, "y": 20}, p)
    [frame] = on(p, "__cursor:canvas")
    assert (frame.event, frame.relay) == ("update", True)
    assert isinstance(frame.data["key"], str)
    assert frame.data["user"] == {"id": "1", "name": "Alice"}
    assert frame.data["data"] == {"x": 10, "y": 20}
    await c.close()


async def test_user_data_is_selected_and_stripped(backend: Backend) -> None:
    p = MockPlatform()
    plain = Cursor(backend)
    ws = MockConnection(
        user_data={
            "id": "1",
            "role": "admin",
            "__subscriptions": ["x"],
            "remoteAddress": "1.2.3.4",
            "authToken": "t",
        }
    )
    plain.update(ws, "canvas", 1, p)
    assert p.published[-1].data["user"] == {"id": "1", "role": "admin"}
    leaky = Cursor(
        backend,
        select=lambda u: {
            "id": u["id"],
            "profile": {"token": "x", "ok": 1},
            "__hidden": 1,
            "constructor": 2,
        },
    )
    leaky.update(ws, "canvas", 1, p)
    assert p.published[-1].data["user"] == {"id": "1", "profile": {"ok": 1}}
    await plain.close()
    await leaky.close()


async def test_sensitive_key_inside_an_array_warns_once(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    c = Cursor(backend, select=lambda u: u)
    with caplog.at_level(logging.WARNING):
        c.update(
            MockConnection(user_data={"id": "1", "items": [{"authToken": "t"}]}),
            "t",
            1,
            MockPlatform(),
        )
        c.update(
            MockConnection(user_data={"id": "2", "items": [{"authToken": "t"}]}),
            "t",
            1,
            MockPlatform(),
        )
    assert [r for r in caplog.records if "authToken" in r.getMessage()].__len__() == 1
    await c.close()


# -- throttling (§11.7.4-6) ----------------------------------------------------------------------


async def test_throttle_leading_and_trailing_edges(backend: Backend, clock: ManualClock) -> None:
    c = Cursor(backend, throttle=0.1)
    p, ws = MockPlatform(), alice()
    c.update(ws, "canvas", {"x": 0}, p)
    await clock.advance(0.03)
    c.update(ws, "canvas", {"x": 5}, p)
    await clock.advance(0.03)
    c.update(ws, "canvas", {"x": 99}, p)
    assert [f.data["data"] for f in on(p, "__cursor:canvas")] == [{"x": 0}]
    await clock.advance(0.04)
    assert [f.data["data"] for f in on(p, "__cursor:canvas")] == [{"x": 0}, {"x": 99}]
    await clock.advance(0.1)
    c.update(ws, "canvas", {"x": 7}, p)
    assert on(p, "__cursor:canvas")[-1].data["data"] == {"x": 7}
    assert len(on(p, "__cursor:canvas")) == 3
    await c.close()


async def test_zero_throttle_publishes_every_update(backend: Backend) -> None:
    c = Cursor(backend, throttle=0)
    p, ws = MockPlatform(), alice()
    for x in range(3):
        c.update(ws, "canvas", {"x": x}, p)
    assert len(on(p, "__cursor:canvas")) == 3
    await c.close()


async def test_throttle_is_per_connection_per_topic(backend: Backend) -> None:
    c = Cursor(backend, throttle=1.0)
    p, ws = MockPlatform(), alice()
    c.update(ws, "a", 1, p)
    c.update(ws, "b", 1, p)
    c.update(MockConnection(user_data={"id": "2"}), "a", 2, p)
    assert [m.topic for m in p.published] == ["__cursor:a", "__cursor:b", "__cursor:a"]
    await c.close()


async def test_topic_throttle_coalesces_into_bulk(backend: Backend, clock: ManualClock) -> None:
    c = Cursor(backend, throttle=0, topic_throttle=0.1)
    p = MockPlatform()
    users = [MockConnection(user_data={"id": str(i)}) for i in range(3)]
    c.update(users[0], "canvas", {"x": 1}, p)
    c.update(users[1], "canvas", {"x": 2}, p)
    c.update(users[2], "canvas", {"x": 3}, p)
    c.update(users[2], "canvas", {"x": 99}, p)
    assert [m.event for m in on(p, "__cursor:canvas")] == ["update"]
    c.update(users[0], "other", {"x": 0}, p)
    assert [m.event for m in on(p, "__cursor:other")] == ["update"]
    await clock.advance(0.1)
    [_, bulk] = on(p, "__cursor:canvas")
    assert bulk.event == "bulk"
    assert sorted(e["data"]["x"] for e in bulk.data) == [2, 99]
    await clock.advance(0.2)
    c.update(users[1], "canvas", {"x": 5}, p)
    await clock.advance(0.05)
    c.update(users[1], "canvas", {"x": 6}, p)
    await clock.advance(0.05)
    assert [m.event for m in on(p, "__cursor:canvas")][-2:] == ["update", "update"]
    # Not closed with writes in flight: cancelling a running statement can hold up the
    # Postgres pool's close (connect_timeout), which is not what this test is about.
    await c.flush()
    await c.close()


async def test_close_cancels_pending_timers(backend: Backend, clock: ManualClock) -> None:
    c = Cursor(backend, throttle=0.1, topic_throttle=0.1)
    p, ws = MockPlatform(), alice()
    c.update(ws, "canvas", 1, p)
    c.update(ws, "canvas", 2, p)
    c.update(MockConnection(user_data={"id": "2"}), "canvas", 3, p)
    await c.close()
    await clock.advance(1.0)
    assert len(on(p, "__cursor:canvas")) == 1


# -- removing and listing (§11.7.7-8, 14) ----------------------------------------------------------


async def test_remove_all_topics_and_cancel_trailing(backend: Backend, clock: ManualClock) -> None:
    c = Cursor(backend, throttle=0.1)
    p, ws = MockPlatform(), alice()
    c.update(ws, "canvas-a", 1, p)
    c.update(ws, "canvas-b", 1, p)
    c.update(ws, "canvas-a", 2, p)  # trailing pending
    await c.flush()
    await c.remove(MockConnection(), p)
    await c.remove(ws, p)
    assert [(m.topic, m.event) for m in p.published if m.event == "remove"] == [
        ("__cursor:canvas-a", "remove"),
        ("__cursor:canvas-b", "remove"),
    ]
    await clock.advance(0.2)
    assert [m.event for m in on(p, "__cursor:canvas-a")] == ["update", "remove"]
    assert (await c.list("canvas-a"), await c.list("canvas-b")) == ([], [])
    await c.close()


async def test_remove_one_topic_keeps_the_others(backend: Backend) -> None:
    c = Cursor(backend, throttle=0)
    p, ws = MockPlatform(), alice()
    c.update(ws, "a", 1, p)
    c.update(ws, "b", 1, p)
    await c.flush()
    await c.remove(ws, p, "a")
    await c.remove(ws, p, "unknown")
    c.update(ws, "b", 2, p)
    await c.flush()
    assert [e["data"] for e in await c.list("b")] == [2]
    assert await c.list("a") == []
    assert [m.topic for m in p.published if m.event == "remove"] == ["__cursor:a"]
    await c.close()


async def test_list_and_clear(backend: Backend, clock: ManualClock) -> None:
    c = Cursor(backend, throttle=0.1)
    p, ws = MockPlatform(), alice()
    c.update(ws, "canvas", {"x": 1}, p)
    c.update(ws, "canvas", {"x": 2}, p)
    await c.flush()
    [entry] = await c.list("canvas")
    assert entry == {"key": entry["key"], "user": {"id": "1", "name": "Alice"}, "data": {"x": 1}}
    assert await c.list("nothing") == []
    await c.clear()
    await clock.advance(0.2)
    assert (await c.list("canvas"), len(on(p, "__cursor:canvas"))) == ([], 1)
    await c.close()


async def test_failed_removal_sends_no_remove_frame(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    c = Cursor(faulty, throttle=0)
    p, ws = MockPlatform(), alice()
    c.update(ws, "a", 1, p)
    c.update(ws, "b", 1, p)
    await c.flush()
    faulty.faults.fail("kv.map_remove", times=1)
    await c.remove(ws, p, "a")
    assert [m for m in p.published if m.event == "remove"] == []
    assert len(await c.list("a")) == 1
    faulty.faults.fail("kv.map_remove", times=1)
    await c.remove(ws, p)
    assert [m for m in p.published if m.event == "remove"] == []
    ws2 = alice()
    c.update(ws2, "c", 1, p)
    await c.flush()
    await c.remove(ws2, p, "c")
    assert (len(on(p, "__cursor:c", "remove")), await c.list("c")) == (1, [])
    await c.close()


# -- relay and backfill (§11.7.9-11, 15) -----------------------------------------------------------


async def test_updates_and_removes_are_stored_then_relayed(open_backend: Opener) -> None:
    faulty = FaultyBackend(await open_backend())
    a, b = Cursor(faulty, throttle=0), Cursor(await open_backend(), throttle=0)
    pa, pb = MockPlatform(), MockPlatform()
    b.update(MockConnection(user_data={"id": "b"}), "canvas", 0, pb)
    await b.flush()
    await settle()
    pb.reset()
    ws = alice()
    a.update(ws, "canvas", {"x": 3}, pa)
    await a.flush()
    [envelope] = relays(faulty)
    assert (envelope["event"], envelope["topic"], envelope["payload"]["data"]) == (
        "update",
        "canvas",
        {"x": 3},
    )
    await eventually(lambda: len(on(pb, "__cursor:canvas", "update")) == 1)
    [remote] = on(pb, "__cursor:canvas", "update")
    assert (remote.relay, remote.data["data"]) == (False, {"x": 3})
    assert {e["data"]["x"] for e in await b.list("canvas") if isinstance(e["data"], dict)} == {3}
    await a.remove(ws, pa)
    assert [e["event"] for e in relays(faulty)] == ["update", "remove"]
    await eventually(lambda: len(on(pb, "__cursor:canvas", "remove")) == 1)
    assert [e["key"] for e in await b.list("canvas")] != [envelope["payload"]["key"]]
    assert len(on(pa, "__cursor:canvas", "update")) == 1  # no echo
    await a.close()
    await b.close()


async def test_failed_write_is_published_locally_but_never_relayed(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    c = Cursor(faulty, throttle=0)
    p = MockPlatform()
    faulty.faults.fail("kv.map_put_many", times=1)
    c.update(alice(), "canvas", 1, p)
    await c.flush()
    assert (len(on(p, "__cursor:canvas")), relays(faulty), await c.list("canvas")) == (1, [], [])
    c.update(MockConnection(user_data={"id": "2"}), "canvas", 2, p)
    await c.flush()
    assert len(relays(faulty)) == 1
    assert [e["data"] for e in await c.list("canvas")] == [2]
    await c.close()


async def test_remote_frames_go_to_the_latest_platform(open_backend: Opener) -> None:
    a, b = Cursor(await open_backend(), throttle=0), Cursor(await open_backend(), throttle=0)
    pa, old, new = MockPlatform(), MockPlatform(), MockPlatform()
    b.update(MockConnection(user_data={"id": "b"}), "canvas", 0, old)
    b.update(MockConnection(user_data={"id": "b2"}), "canvas", 0, new)
    await b.flush()
    await settle()
    old.reset()
    new.reset()
    a.update(alice(), "canvas", 1, pa)
    await eventually(lambda: len(new.published) == 1)
    assert old.published == []
    await a.close()
    await b.close()


async def test_subscription_backfills_other_instances_entries(open_backend: Opener) -> None:
    a, b = Cursor(await open_backend(), throttle=0), Cursor(await open_backend(), throttle=0)
    pa, pb = MockPlatform(), MockPlatform()
    b.update(MockConnection(user_data={"id": "2"}), "canvas", {"x": 77}, pb)
    await b.flush()
    a.update(alice(), "canvas", {"x": 1}, pa)
    await eventually(lambda: len(on(pa, "__cursor:canvas", "bulk")) == 1)
    [bulk] = on(pa, "__cursor:canvas", "bulk")
    assert bulk.relay is False
    assert [(e["user"], e["data"]) for e in bulk.data] == [({"id": "2"}, {"x": 77})]
    await a.close()
    await b.close()


async def test_failed_subscription_is_retried_by_the_next_update(open_backend: Opener) -> None:
    faulty = FaultyBackend(await open_backend())
    a, b = Cursor(faulty, throttle=0), Cursor(await open_backend(), throttle=0)
    pa, pb = MockPlatform(), MockPlatform()
    faulty.faults.fail("pubsub.subscribe", times=1)
    a.update(alice(), "canvas", 1, pa)
    await settle()
    a.update(alice(), "canvas", 2, pa)
    await eventually(lambda: len(faulty.faults.called("pubsub.subscribe")) == 2)
    await a.flush()  # the retried subscription (and its backfill) is done
    b.update(MockConnection(user_data={"id": "2"}), "canvas", 3, pb)
    await eventually(lambda: len(on(pa, "__cursor:canvas", "update")) == 3)
    assert on(pa, "__cursor:canvas", "update")[-1].relay is False
    await a.close()
    await b.close()


async def test_invalid_envelopes_are_dropped(open_backend: Opener) -> None:
    raw = await open_backend()
    c = Cursor(await open_backend(), throttle=0)
    p = MockPlatform()
    c.update(alice(), "canvas", 1, p)
    await c.flush()
    await settle()
    assert raw.pubsub is not None

    def env(**fields: Any) -> str:
        base = {"instanceId": "x", "topic": "canvas", "event": "update"}
        return json.dumps({**base, **fields})

    # The cursor subscribes lazily; wait until a valid envelope gets through.
    warm = env(payload={"key": "warm", "user": None, "data": 0})

    async def subscribed() -> bool:
        await raw.pubsub.publish("cursor:events", warm)  # type: ignore[union-attr]
        await settle()
        return any(m.data == {"key": "warm", "user": None, "data": 0} for m in p.published)

    await eventually_async(subscribed, what="cursor subscription")
    await settle()
    p.reset()

    for bad in (
        "{",
        env(topic="__rpc", payload={"key": "k", "data": 1}),
        env(event="drop", payload={"key": "k"}),
        env(payload={"data": 1}),
        env(event="bulk", payload={"key": "k"}),
    ):
        await raw.pubsub.publish("cursor:events", bad)
    await raw.pubsub.publish("cursor:events", env(payload={"key": "k", "user": None, "data": 2}))
    await eventually(lambda: len(p.published) == 1)
    assert p.published[0].data == {"key": "k", "user": None, "data": 2}
    await c.close()


# -- attach, snapshot, hooks (§11.7.12-13) ---------------------------------------------------------


async def test_attach_subscribes_and_snapshots_only_when_entries_exist(backend: Backend) -> None:
    c = Cursor(backend, throttle=0)
    p, viewer = MockPlatform(), MockConnection()
    await c.attach(viewer, "canvas", p)
    assert [(s.conn, s.topic) for s in p.subscribed] == [(viewer, "__cursor:canvas")]
    assert p.sent == []
    c.update(alice(), "canvas", {"x": 1}, p)
    await c.flush()
    await c.attach(viewer, "canvas", p)
    [snapshot] = p.sent
    assert (snapshot.event, [e["data"] for e in snapshot.data]) == ("bulk", [{"x": 1}])

    class Broken(MockPlatform):
        def subscribe(self, conn: Any, topic: str) -> Any:
            raise RuntimeError("boom")

        def unsubscribe(self, conn: Any, topic: str) -> bool:
            raise RuntimeError("boom")

    await c.attach(viewer, "canvas", Broken())
    await c.detach(viewer, "canvas", Broken())
    await c.close()


async def test_hooks_message_subscribe_and_close(backend: Backend) -> None:
    c = Cursor(backend, throttle=0)
    p, ws = MockPlatform(), alice()
    c.hooks.message(ws, {"type": "cursor", "topic": "canvas", "data": {"x": 1}}, platform=p)
    c.hooks.message(ws, {"type": "chat", "topic": "canvas", "data": 1}, platform=p)
    c.hooks.message(ws, {"type": "cursor", "topic": "__rpc", "data": 1}, platform=p)
    assert len(on(p, "__cursor:canvas")) == 1
    await c.flush()
    viewer = MockConnection()
    await c.hooks.subscribe(viewer, "__cursor:canvas", platform=p)
    assert [s.event for s in p.sent] == ["bulk"]
    await c.hooks.close(ws, platform=p)
    assert (c.active_topics(), await c.list("canvas")) == ([], [])
    await c.close()


# -- breaker (§11.7.16) ---------------------------------------------------------------------------


async def test_broken_breaker_publishes_locally_without_storage(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    breaker = CircuitBreaker(failure_threshold=1)
    c = Cursor(faulty, throttle=0, breaker=breaker)
    p, ws = MockPlatform(), alice()
    c.update(ws, "canvas", 1, p)
    await c.flush()
    breaker.failure()
    c.update(ws, "canvas", 2, p)
    await c.flush()
    assert len(on(p, "__cursor:canvas")) == 2
    assert len(faulty.faults.called("kv.map_put_many")) == 1
    with pytest.raises(CircuitBrokenError):
        await c.list("canvas")
    await c.remove(ws, p)
    assert on(p, "__cursor:canvas", "remove") == []
    breaker.reset()
    assert [e["data"] for e in await c.list("canvas")] == [1]
    await c.close()


async def test_metrics(backend: Backend) -> None:
    metrics = Metrics()
    c = Cursor(backend, throttle=1.0, metrics=metrics)
    p, ws = MockPlatform(), alice()
    c.update(ws, "canvas", 1, p)
    c.update(ws, "canvas", 2, p)
    text = metrics.serialize()
    assert 'cursor_updates_total{topic="canvas"} 2.0' in text
    assert 'cursor_broadcasts_total{topic="canvas"} 1.0' in text
    assert 'cursor_throttled_total{topic="canvas"} 1.0' in text
    await c.close()


# -- two instances and TTL (§11.7.18) -----------------------------------------------------------


async def test_entries_expire_after_ttl(open_backend: Opener, clock: ManualClock) -> None:
    a, b = Cursor(await open_backend(), ttl=1.0), Cursor(await open_backend(), ttl=1.0)
    a.update(alice(), "canvas", 1, MockPlatform())
    await a.flush()
    assert len(await b.list("canvas")) == 1
    await a.close()  # a crash: nothing removes the entry
    await clock.advance(1.1)
    await eventually_async(lambda: is_empty(b, "canvas"))
    await b.close()


async def test_clear_removes_every_topic(open_backend: Opener) -> None:
    a, b = Cursor(await open_backend(), throttle=0), Cursor(await open_backend(), throttle=0)
    p = MockPlatform()
    for i in range(20):
        a.update(alice(), f"canvas-{i}", i, p)
    await a.flush()
    await b.clear()
    assert all([await a.list(f"canvas-{i}") == [] for i in range(20)])
    await a.close()
    await b.close()
