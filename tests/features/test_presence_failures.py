"""Presence under failure: seed spec §7.9.17-18 (breaker, rollback of a failed join) and
§7.9.20-21 (heartbeat, anonymous users, hooks, an aborted join), on every backend kind with kv
and pubsub ports. Time is a manual clock.
"""

from __future__ import annotations

import pytest

from tests.features.presence_support import diffs, flushed, states, user
from tests.helpers import eventually, settle
from uwsx.errors import CircuitBrokenError
from uwsx.features.presence import Presence
from uwsx.platform import ConnectionClosedError, LocalConnection
from uwsx.ports.backend import Backend
from uwsx.reliability import CircuitBreaker
from uwsx.testing import (
    FaultyBackend,
    ManualClock,
    MockConnection,
    MockPlatform,
    Published,
)

# -- breaker and rollback (§7.9.17-18) -------------------------------------------------------------


async def test_broken_breaker_fails_join_list_count_fast(backend: Backend) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    presence = Presence(backend, breaker=breaker)
    breaker.failure()
    ws = user("1")
    with pytest.raises(CircuitBrokenError):
        await presence.join(ws, "room", MockPlatform())
    with pytest.raises(CircuitBrokenError):
        await presence.list("room")
    with pytest.raises(CircuitBrokenError):
        await presence.count("room")
    assert presence.stats().total_online == 0
    assert not ws.is_subscribed("__presence:room")
    await presence.close()


async def test_probing_list_heals_the_breaker(backend: Backend, clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1.0)
    presence = Presence(backend, breaker=breaker)
    breaker.failure()
    await clock.advance(1.0)
    assert breaker.state == "probing"
    assert await presence.list("room") == []
    assert breaker.is_healthy
    await presence.close()


async def test_failed_write_rejects_and_leaves_nothing(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    breaker = CircuitBreaker(failure_threshold=1)
    presence = Presence(faulty, breaker=breaker)
    faulty.faults.fail("kv.map_put", times=1)
    with pytest.raises(Exception, match="injected"):
        await presence.join(user("1"), "room", MockPlatform())
    assert not breaker.is_healthy
    breaker.reset()
    assert await presence.count("room") == 0
    await presence.close()


async def test_broken_breaker_suppresses_leave_diffs(backend: Backend) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    presence = Presence(backend, breaker=breaker)
    p, ws1, ws2 = MockPlatform(), user("1"), user("2")
    await presence.join(ws1, "room", p)
    await presence.join(ws2, "room", p)
    await presence.join(ws2, "other", p)
    await flushed(presence)
    p.reset()
    breaker.failure()
    await presence.leave(ws1, p, "room")
    await presence.leave(ws2, p)
    await flushed(presence)
    assert diffs(p) + diffs(p, "other") == []
    await presence.close()


class ClosesOnPresence(LocalConnection):
    """A connection that dies exactly when presence subscribes it."""

    def subscribe(self, topic: str) -> bool:
        if topic.startswith("__presence:"):
            raise ConnectionClosedError()
        return super().subscribe(topic)


async def test_connection_dying_during_join_rolls_back_silently(backend: Backend) -> None:
    presence = Presence(backend)
    p = MockPlatform()
    await presence.join(ClosesOnPresence(user_data={"id": "1"}), "room", p)
    await flushed(presence)
    assert (await presence.count("room"), diffs(p), states(p)) == (0, [], [])
    await presence.close()


async def test_failed_snapshot_read_rejects_without_diffs(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    presence = Presence(faulty)
    p = MockPlatform()
    faulty.faults.fail("kv.map_items", times=1)
    with pytest.raises(Exception, match="injected"):
        await presence.join(user("1"), "room", p)
    await flushed(presence)
    assert (diffs(p), states(p), await presence.count("room")) == ([], [], 0)
    await presence.close()


# -- heartbeat, anonymous users (§7.9.20-21) ------------------------------------------------------


async def test_heartbeat_publishes_local_keys_until_they_leave(
    backend: Backend, clock: ManualClock
) -> None:
    presence = Presence(backend, heartbeat=0.05, ttl=1.0)
    p, ws = MockPlatform(), user("1")
    await presence.join(ws, "room", p)
    await clock.advance(0.05)
    await eventually(lambda: any(m.event == "heartbeat" for m in p.published))
    [beat] = [m for m in p.published if m.event == "heartbeat"]
    assert beat == Published("__presence:room", "heartbeat", ["1"])
    await presence.leave(ws, p)
    p.reset()
    await clock.advance(0.05)
    await settle()
    assert [m for m in p.published if m.event == "heartbeat"] == []
    await presence.close()


async def test_anonymous_connections_are_distinct_and_keys_resolve_before_select(
    backend: Backend,
) -> None:
    presence = Presence(backend, select=lambda u: {"name": u.get("name")})
    p = MockPlatform()
    await presence.join(MockConnection(), "anon", p)
    await presence.join(MockConnection(), "anon", p)
    await presence.join(user("1", "a"), "tabs", p)
    await presence.join(user("1", "a"), "tabs", p)
    assert (await presence.count("anon"), await presence.count("tabs")) == (2, 1)
    await presence.close()


async def test_hooks_route_joins_syncs_and_leaves(backend: Backend) -> None:
    presence = Presence(backend)
    subscribe, unsubscribe, close = (
        presence.hooks.subscribe,
        presence.hooks.unsubscribe,
        presence.hooks.close,
    )
    p, ws, observer = MockPlatform(), user("1"), MockConnection()
    await subscribe(ws, "room", platform=p)
    await subscribe(observer, "__presence:room", platform=p)
    assert (await presence.count("room"), len(states(p))) == (1, 2)
    await unsubscribe(observer, "__presence:room", platform=p)
    await unsubscribe(ws, "__other", platform=p)
    assert await presence.count("room") == 1
    await unsubscribe(ws, "room", platform=p)
    assert await presence.count("room") == 0
    await subscribe(ws, "room", platform=p)
    await close(ws, platform=p)
    assert await presence.count("room") == 0
    await presence.close()


async def test_probe_is_never_left_taken_by_an_aborted_join(
    backend: Backend, clock: ManualClock
) -> None:
    """§23 B9: a join that took the breaker's probe and then stopped early (closed connection)
    must still report, or the breaker stays stuck in probing."""
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1.0)
    presence = Presence(backend, breaker=breaker)
    breaker.failure()
    await clock.advance(1.0)
    dead = user("1")
    dead.close()
    await presence.join(dead, "room", MockPlatform())
    assert breaker.state == "healthy"
    assert await presence.count("room") == 0
    await presence.close()
