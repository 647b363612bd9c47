"""Cursor regressions: the seed spec §11.6/§23 ghost-state bugs (B10, B11, §23.2.10) and the
simulator-found ordering bug (uwsx_sim CU-2: positions never go backwards on another instance),
on every backend kind with kv and pubsub ports. Time is a manual clock.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.features.cursor_support import alice, is_empty, on
from tests.helpers import Opener, eventually, eventually_async, settle
from uwsx.features.cursor import Cursor
from uwsx.ports.backend import Backend
from uwsx.reliability import CircuitBreaker
from uwsx.testing import (
    FaultyBackend,
    ManualClock,
    MockConnection,
    MockPlatform,
)

# -- regressions: §11.6 / §23 B10, B11, §23.2.10 ---------------------------------------------------


async def test_close_with_a_failing_unsubscribe_does_not_raise(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    c = Cursor(faulty)
    c.update(alice(), "canvas", 1, MockPlatform())
    await eventually(lambda: bool(faulty.faults.called("pubsub.subscribe")))
    await settle()
    faulty.faults.fail("subscription.close")
    await c.close()
    await c.close()


async def test_close_under_a_broken_breaker_drops_local_state(
    backend: Backend, clock: ManualClock
) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    c = Cursor(backend, throttle=0, ttl=1.0, breaker=breaker)
    p, ws = MockPlatform(), alice()
    c.update(ws, "canvas", 1, p)
    await c.flush()
    breaker.failure()
    await c.hooks.close(ws, platform=p)
    assert c.active_topics() == []
    breaker.reset()
    await clock.advance(1.1)
    await eventually_async(lambda: is_empty(c, "canvas"))
    await c.close()


async def test_bulk_frames_are_published_locally_while_the_breaker_is_open(
    backend: Backend, clock: ManualClock
) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    c = Cursor(backend, throttle=0, topic_throttle=0.1, breaker=breaker)
    p = MockPlatform()
    breaker.failure()
    for i in range(3):
        c.update(MockConnection(user_data={"id": str(i)}), "canvas", i, p)
    await clock.advance(0.1)
    assert [m.event for m in on(p, "__cursor:canvas")] == ["update", "bulk"]
    await c.close()


async def test_remove_waits_for_an_in_flight_write(open_backend: Opener) -> None:
    faulty = FaultyBackend(await open_backend())
    a, b = Cursor(faulty, throttle=0), Cursor(await open_backend(), throttle=0)
    pa, pb = MockPlatform(), MockPlatform()
    b.update(MockConnection(user_data={"id": "b"}), "canvas", 0, pb)
    await b.flush()
    await settle()
    pb.reset()
    ws = alice()
    a.update(ws, "canvas", 0, pa)
    await a.flush()
    await eventually(lambda: len(on(pb, "__cursor:canvas", "update")) == 1)
    gate = faulty.faults.gate("kv.map_put_many")
    a.update(ws, "canvas", 1, pa)
    await settle()
    removing = asyncio.ensure_future(a.remove(ws, pa))
    await settle()
    gate.set()
    await removing
    await a.flush()
    await eventually(lambda: len(on(pb, "__cursor:canvas", "remove")) == 1)
    await settle()
    events = [m.event for m in on(pb, "__cursor:canvas") if m.relay is False]
    assert events[-1] == "remove"
    assert [e["user"] for e in await b.list("canvas")] == [{"id": "b"}]
    await a.close()
    await b.close()


# -- regressions: positions never go backwards on another instance (uwsx_sim CU-2) --------------


def positions(p: MockPlatform, key: str) -> list[Any]:
    """The positions of entry ``key`` that ``p`` showed from other instances, in order
    (``update`` and ``bulk`` frames alike)."""
    out: list[Any] = []
    for m in on(p, "__cursor:canvas"):
        if m.relay is False and m.event in ("update", "bulk"):
            frames = m.data if m.event == "bulk" else [m.data]
            out.extend(f["data"]["n"] for f in frames if f["key"] == key)
    return out


def removed_at(p: MockPlatform, key: str) -> int:
    """Index in ``p.published`` of the ``remove`` frame of ``key``."""
    return next(
        i
        for i, m in enumerate(p.published)
        if m.event == "remove" and m.relay is False and m.data["key"] == key
    )


class _SlowFirstWrite(FaultyBackend):
    """The first ``map_put_many`` reaches storage only once ``release`` is set, while later
    ones go ahead: what a connection pool does when a request overtakes another."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.release = asyncio.Event()
        self._held = False

    @property
    def kv(self) -> Any:
        inner, owner = super().kv, self

        class KVProxy:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            async def map_put_many(self, *args: Any, **kwargs: Any) -> None:
                if not owner._held:
                    owner._held = True
                    await owner.release.wait()
                await inner.map_put_many(*args, **kwargs)

        return KVProxy()


async def test_relays_follow_broadcast_order_when_writes_overtake(open_backend: Opener) -> None:
    """uwsx_sim cursor-crash seed 0x47 (a connection pool): each broadcast was stored and
    relayed by its own task, so a later position's relay could go out before an earlier one's."""
    slow = _SlowFirstWrite(await open_backend())
    a, b = Cursor(slow, throttle=0), Cursor(await open_backend(), throttle=0)
    pa, pb = MockPlatform(), MockPlatform()
    b.update(MockConnection(user_data={"id": "b"}), "canvas", {"n": 0}, pb)
    await b.flush()
    ws = alice()
    a.update(ws, "canvas", {"n": 1}, pa)
    await settle()
    a.update(ws, "canvas", {"n": 2}, pa)
    await settle()
    slow.release.set()
    await a.flush()
    key = on(pa, "__cursor:canvas", "update")[0].data["key"]
    await eventually(lambda: 2 in positions(pb, key))
    assert positions(pb, key) == [1, 2]
    await a.close()
    await b.close()


async def test_backfill_answered_late_never_moves_a_cursor_back(open_backend: Opener) -> None:
    """uwsx_sim cursor-crash seed 0x7c with one pipelined connection: a backfill read applied
    before a live update was stored was delivered after that update."""
    a = Cursor(await open_backend(), throttle=0)
    faulty = FaultyBackend(await open_backend())
    b = Cursor(faulty, throttle=0)
    pa, pb = MockPlatform(), MockPlatform()
    ws = alice()
    a.update(ws, "canvas", {"n": 1}, pa)
    await a.flush()
    key = on(pa, "__cursor:canvas", "update")[0].data["key"]
    late = faulty.faults.gate("kv.map_items", after=True)
    b.update(MockConnection(user_data={"id": "b"}), "canvas", {"n": 0}, pb)
    await eventually(lambda: bool(faulty.faults.answered("kv.map_items")))  # backfill read answered
    a.update(ws, "canvas", {"n": 2}, pa)
    await a.flush()
    await eventually(lambda: positions(pb, key) == [2])
    late.set()
    await b.flush()  # the backfill finished
    await settle()
    assert positions(pb, key) == [2]
    await a.close()
    await b.close()


async def test_backfill_answered_late_never_resurrects_a_removed_cursor(
    open_backend: Opener,
) -> None:
    a = Cursor(await open_backend(), throttle=0)
    faulty = FaultyBackend(await open_backend())
    b = Cursor(faulty, throttle=0)
    pa, pb = MockPlatform(), MockPlatform()
    ws = alice()
    a.update(ws, "canvas", {"n": 1}, pa)
    await a.flush()
    key = on(pa, "__cursor:canvas", "update")[0].data["key"]
    late = faulty.faults.gate("kv.map_items", after=True)
    b.update(MockConnection(user_data={"id": "b"}), "canvas", {"n": 0}, pb)
    await eventually(lambda: bool(faulty.faults.answered("kv.map_items")))
    await a.remove(ws, pa)
    await eventually(lambda: bool(on(pb, "__cursor:canvas", "remove")))
    late.set()
    await b.flush()
    await settle()
    after = pb.published[removed_at(pb, key) + 1 :]
    assert [m for m in after if m.event == "bulk" and any(f["key"] == key for f in m.data)] == []
    await a.close()
    await b.close()


async def reads_settled(faulty: FaultyBackend) -> int:
    """Wait until every ``map_items`` read made so far (a backfill) was answered; how many."""
    faults = faulty.faults
    await eventually(
        lambda: len(faults.answered("kv.map_items")) == len(faults.called("kv.map_items"))
    )
    return len(faults.called("kv.map_items"))


async def test_snapshot_answered_late_leaves_out_superseded_positions(
    open_backend: Opener,
) -> None:
    a = Cursor(await open_backend(), throttle=0)
    faulty = FaultyBackend(await open_backend())
    b = Cursor(faulty, throttle=0)
    pa, pb, viewer = MockPlatform(), MockPlatform(), MockConnection()
    b.update(MockConnection(user_data={"id": "b"}), "canvas", {"n": 0}, pb)
    await b.flush()
    ws = alice()
    a.update(ws, "canvas", {"n": 1}, pa)
    await a.flush()
    key = on(pa, "__cursor:canvas", "update")[0].data["key"]
    await eventually(lambda: positions(pb, key) == [1])
    reads = await reads_settled(faulty)
    late = faulty.faults.gate("kv.map_items", after=True)
    attaching = asyncio.ensure_future(b.attach(viewer, "canvas", pb))
    await eventually(lambda: len(faulty.faults.answered("kv.map_items")) > reads)  # snapshot read
    a.update(ws, "canvas", {"n": 2}, pa)
    await a.flush()
    await eventually(lambda: positions(pb, key) == [1, 2])
    late.set()
    await attaching
    [snapshot] = [s for s in pb.sent if s.conn is viewer]
    assert [f["data"] for f in snapshot.data] == [{"n": 0}]  # b's own entry only
    await a.close()
    await b.close()


async def test_snapshot_sends_own_entries_as_they_are_now(backend: Backend) -> None:
    faulty = FaultyBackend(backend)
    c = Cursor(faulty, throttle=0)
    p, viewer, ws = MockPlatform(), MockConnection(), alice()
    c.update(ws, "canvas", {"n": 1}, p)
    await c.flush()
    reads = await reads_settled(faulty)
    late = faulty.faults.gate("kv.map_items", after=True)
    attaching = asyncio.ensure_future(c.attach(viewer, "canvas", p))
    await eventually(lambda: len(faulty.faults.answered("kv.map_items")) > reads)
    c.update(ws, "canvas", {"n": 2}, p)
    await c.flush()
    late.set()
    await attaching
    [snapshot] = [s for s in p.sent if s.conn is viewer]
    assert [f["data"] for f in snapshot.data] == [{"n": 2}]
    await c.close()
