"""Group regressions: the seed spec §10.6/§23 B11 ghost members, the heartbeat races, and the
simulator-found capped-group bug (uwsx_sim GR-1), on every backend kind with kv and pubsub ports.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.features.groups_support import count_is, frames
from tests.helpers import Opener, eventually, eventually_async, settle
from uwsx.features.groups import Group
from uwsx.ports.backend import Backend
from uwsx.ports.checks import colocate
from uwsx.reliability import CircuitBreaker
from uwsx.testing import (
    FaultyBackend,
    ManualClock,
    MockConnection,
    MockPlatform,
    Published,
)

# -- regressions: §10.6 / §23 B11 and the heartbeat race -------------------------------------------


async def test_close_hook_under_a_broken_breaker_leaves_no_ghost(
    backend: Backend, clock: ManualClock
) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    g = Group(backend, "lobby", member_ttl=1.0, breaker=breaker)
    p, ws = MockPlatform(), MockConnection()
    await g.join(ws, p)
    breaker.failure()
    await g.hooks.close(ws, platform=p)
    assert g.has(ws) is False
    await settle()
    assert frames(p, "leave") == [Published("__group:lobby", "leave", {"role": "member"})]
    breaker.reset()
    await clock.advance(1.1)
    await eventually_async(lambda: count_is(g, 0), step=lambda: clock.advance(0.3))
    await g.close()


async def test_heartbeat_drops_members_whose_connection_died(
    backend: Backend, clock: ManualClock
) -> None:
    g = Group(backend, "lobby", member_ttl=3.0)
    p, ws = MockPlatform(), MockConnection()
    await g.join(ws, p)
    ws.close()
    await clock.advance(1.0)
    await eventually(lambda: not g.has(ws))
    assert await g.count() == 0
    assert frames(p, "leave") == [Published("__group:lobby", "leave", {"role": "member"})]
    await g.close()


@pytest.mark.parametrize(
    ("max_members", "refresh"), [(None, "kv.map_put_many"), (5, "kv.map_put_bounded")]
)
async def test_heartbeat_never_resurrects_a_member_left_meanwhile(
    backend: Backend, max_members: int | None, refresh: str
) -> None:
    faulty = FaultyBackend(backend)
    g = Group(faulty, "lobby", max_members=max_members)
    p, ws = MockPlatform(), MockConnection()
    await g.join(ws, p)
    gate = faulty.faults.gate(refresh)
    calls = len(faulty.faults.called(refresh))
    beat = asyncio.ensure_future(g.beat())
    await eventually(lambda: len(faulty.faults.called(refresh)) > calls)
    leave = asyncio.ensure_future(g.leave(ws, p))
    await settle()
    gate.set()
    await asyncio.gather(beat, leave)
    assert (g.has(ws), await g.count()) == (False, 0)
    await g.close()


async def test_idle_group_heartbeat_makes_no_backend_calls(
    backend: Backend, clock: ManualClock
) -> None:
    """§23.2.9: the original ran a cleanup script every 5 s even without local members."""
    faulty = FaultyBackend(backend)
    g = Group(faulty, "lobby", member_ttl=3.0)
    p, ws = MockPlatform(), MockConnection()
    await g.join(ws, p)
    await g.leave(ws, p)
    before = len(faulty.faults.calls)
    for _ in range(10):
        await clock.advance(1.0)
    assert faulty.faults.calls[before:] == []
    await g.close()


# -- regression: a stalled instance's heartbeat must not overfill a capped group (GR-1) ----------


async def test_member_expired_during_a_stall_is_not_readmitted_into_a_full_group(
    open_backend: Opener, clock: ManualClock
) -> None:
    """uwsx_sim groups-pause seed 1: an instance paused past ``member_ttl`` resumed and its
    heartbeat re-put its expired members with an unbounded write while others had taken the
    seats (5 members in a group of 4)."""
    faulty = FaultyBackend(await open_backend())
    left: list[tuple[Any, str]] = []
    stalled = Group(
        faulty,
        "lobby",
        member_ttl=1.0,
        max_members=1,
        on_leave=lambda conn, role: left.append((conn, role)),
    )
    other = Group(await open_backend(), "lobby", member_ttl=1.0, max_members=1)
    p, ws = MockPlatform(), MockConnection()
    assert await stalled.join(ws, p) is True
    # The next heartbeat stalls before reaching storage (a paused process) ...
    gate = faulty.faults.gate("kv.map_put_bounded")
    await clock.advance(0.34)
    await eventually(lambda: len(faulty.faults.called("kv.map_put_bounded")) == 2)
    # ... while its member's entry expires and another instance takes the only seat.
    await clock.advance(1.0)
    await eventually_async(
        lambda: other.join(MockConnection(), MockPlatform()), step=lambda: clock.advance(0.3)
    )
    gate.set()
    await eventually(lambda: bool(left))  # on_leave comes last, after the relay
    assert stalled.has(ws) is False
    assert await other.count() == 1
    assert left == [(ws, "member")]
    assert frames(p, "leave") == [Published("__group:lobby", "leave", {"role": "member"})]
    assert ws.is_subscribed("__group:lobby") is False
    await stalled.close()
    await other.close()


async def test_member_expired_during_a_stall_rejoins_while_there_is_room(
    backend: Backend, clock: ManualClock
) -> None:
    faulty = FaultyBackend(backend)
    g = Group(faulty, "lobby", member_ttl=1.0, max_members=2)
    p, ws = MockPlatform(), MockConnection()
    await g.join(ws, p)
    gate = faulty.faults.gate("kv.map_put_bounded")
    await clock.advance(0.34)
    await eventually(lambda: len(faulty.faults.called("kv.map_put_bounded")) == 2)
    await clock.advance(1.0)
    await eventually_async(lambda: count_is(g, 0), step=lambda: clock.advance(0.3))
    gate.set()
    await eventually_async(lambda: count_is(g, 1))
    assert g.has(ws) is True
    assert frames(p, "leave") == []
    await g.close()


async def test_heartbeat_that_finds_the_group_closed_closes_it_locally(
    backend: Backend, clock: ManualClock
) -> None:
    """The dissolve notification was missed (the flag is set without one): the bounded refresh
    refuses the closed group, so the heartbeat closes it here instead of refreshing ghosts."""
    closed: list[bool] = []
    g = Group(backend, "lobby", member_ttl=3.0, max_members=4, on_close=lambda: closed.append(True))
    p, ws = MockPlatform(), MockConnection()
    await g.join(ws, p)
    kv = backend.kv
    assert kv is not None
    await kv.set(f"group:{colocate('lobby')}:closed", "1")
    await clock.advance(1.0)
    await eventually(lambda: g.closed)
    assert (g.has(ws), closed) == (False, [True])
    assert frames(p, "close") == [Published("__group:lobby", "close", None, relay=False)]
    await g.close()
