"""KV contract, part 3: fixed-window token buckets and bans on the backend clock."""

from __future__ import annotations

import math

from uwsx.ports.backend import Backend
from uwsx.ports.kv import BucketResult
from uwsx.testing.contract._base import (
    TTL_SLACK,
    BackendOpener,
    ContractBase,
    bad_input,
    gather,
    kv_of,
)

__all__ = ["KVBucketsContract"]

#: A window no test outlives, for assertions that must not race a refill.
LONG = 600.0


class KVBucketsContract(ContractBase):
    """Token buckets of the KV port (see :mod:`uwsx.ports.kv`)."""

    async def test_kv_bucket_starts_full(self, backend: Backend) -> None:
        first = await kv_of(backend).bucket_take("b", capacity=5, interval=30.0)
        assert first.allowed
        assert first.remaining == 4
        assert 0 < first.reset_in <= 30.0 + TTL_SLACK, first

    async def test_kv_bucket_denies_once_empty(self, backend: Backend) -> None:
        kv = kv_of(backend)
        results = [await kv.bucket_take("b", capacity=3, interval=LONG) for _ in range(4)]
        assert [r.allowed for r in results] == [True, True, True, False]
        assert [r.remaining for r in results] == [2, 1, 0, 0]
        denied = results[-1]
        assert 0 < denied.reset_in <= LONG + TTL_SLACK, denied

    async def test_kv_bucket_takes_cost_points(self, backend: Backend) -> None:
        kv = kv_of(backend)
        taken = await kv.bucket_take("b", capacity=5, interval=LONG, cost=3)
        assert (taken.allowed, taken.remaining) == (True, 2)
        too_much = await kv.bucket_take("b", capacity=5, interval=LONG, cost=4)
        assert (too_much.allowed, too_much.remaining) == (False, 2), "a denial takes nothing"
        assert (await kv.bucket_take("b", capacity=5, interval=LONG, cost=2)).allowed
        assert not (await kv.bucket_take("b", capacity=5, interval=LONG)).allowed

    async def test_kv_bucket_cost_above_capacity_never_succeeds(self, backend: Backend) -> None:
        kv = kv_of(backend)
        big = await kv.bucket_take("b", capacity=3, interval=LONG, cost=4)
        assert not big.allowed
        small = await kv.bucket_take("b", capacity=3, interval=LONG)
        assert (small.allowed, small.remaining) == (True, 2)
        banned = await kv.bucket_take("c", capacity=3, interval=LONG, cost=4, block=LONG)
        assert not banned.allowed
        assert not (await kv.bucket_take("c", capacity=3, interval=LONG)).allowed

    async def test_kv_bucket_refills_after_the_window(self, backend: Backend) -> None:
        kv = kv_of(backend)
        for _ in range(2):
            assert (await kv.bucket_take("b", capacity=2, interval=0.1)).allowed
        refilled = await self.eventually(
            lambda: kv.bucket_take("b", capacity=2, interval=0.1),
            lambda r: r.allowed,
            "the bucket to refill",
        )
        assert refilled.remaining == 1, "a refill restores the full capacity"

    async def test_kv_bucket_block_bans_the_key(self, backend: Backend) -> None:
        kv = kv_of(backend)
        assert (await kv.bucket_take("b", capacity=1, interval=LONG, block=LONG)).allowed
        ban = await kv.bucket_take("b", capacity=1, interval=LONG, block=LONG)
        assert (ban.allowed, ban.remaining) == (False, 0)
        assert 0 < ban.reset_in <= LONG + TTL_SLACK, ban
        still = await kv.bucket_take("b", capacity=1, interval=LONG)
        assert not still.allowed
        assert 0 < still.reset_in <= ban.reset_in, (ban, still)

    async def test_kv_bucket_ban_outlasts_the_window(self, backend: Backend) -> None:
        kv = kv_of(backend)
        # A cost above capacity bans at once, without a take that a refill could race.
        ban = await kv.bucket_take("b", capacity=1, interval=0.05, cost=2, block=LONG)
        assert not ban.allowed
        denied = await self.eventually(
            lambda: kv.bucket_take("b", capacity=1, interval=0.05),
            lambda r: r.reset_in < ban.reset_in - 0.2,
            "several refill windows to pass during the ban",
        )
        assert not denied.allowed, "a ban holds even once the window has refilled"

    async def test_kv_bucket_ban_ends(self, backend: Backend) -> None:
        kv = kv_of(backend)
        ban = await kv.bucket_take("b", capacity=1, interval=LONG, cost=2, block=0.2)
        assert not ban.allowed
        after = await self.eventually(
            lambda: kv.bucket_take("b", capacity=1, interval=LONG),
            lambda r: r.allowed,
            "the ban to end",
        )
        assert after.remaining == 0, "the points the ban kept are there afterwards"

    async def test_kv_bucket_ban_denies_and_keeps_points(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.bucket_ban("fresh", duration=LONG, capacity=5, interval=LONG)
        denied = await kv.bucket_take("fresh", capacity=5, interval=LONG)
        assert (denied.allowed, denied.remaining) == (False, 0)
        assert 0 < denied.reset_in <= LONG + TTL_SLACK
        assert (await kv.bucket_take("kept", capacity=5, interval=LONG, cost=2)).allowed
        await kv.bucket_ban("kept", duration=0.1, capacity=5, interval=LONG)
        after = await self.eventually(
            lambda: kv.bucket_take("kept", capacity=5, interval=LONG),
            lambda r: r.allowed,
            "the explicit ban to end",
        )
        assert after.remaining == 2, "a ban keeps the points the bucket had"

    async def test_kv_bucket_expires_when_idle(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.bucket_take("b", capacity=2, interval=1.0, block=2.0)
        left = await kv.ttl("b")
        assert left is not None
        assert left != math.inf, "an idle bucket must expire on its own"
        assert 0 < left <= 1.0 + 2.0 + 60.0 + TTL_SLACK, left

    async def test_kv_bucket_rejects_bad_input(self, backend: Backend) -> None:
        kv = kv_of(backend)
        for capacity in (0, -1, 1.5, True):
            with bad_input("capacity"):
                await kv.bucket_take("b", capacity=capacity, interval=1.0)  # type: ignore[arg-type]
        for cost in (0, -2, 0.5):
            with bad_input("cost"):
                await kv.bucket_take("b", capacity=2, interval=1.0, cost=cost)  # type: ignore[arg-type]
        for interval in (0, -1.0, math.inf, math.nan, "1"):
            with bad_input("interval"):
                await kv.bucket_take("b", capacity=2, interval=interval)  # type: ignore[arg-type]
        for block in (-1.0, math.inf, math.nan):
            with bad_input("block"):
                await kv.bucket_take("b", capacity=2, interval=1.0, block=block)
        for duration in (0, -1.0, math.inf):
            with bad_input("duration"):
                await kv.bucket_ban("b", duration=duration, capacity=2, interval=1.0)
        with bad_input("capacity"):
            await kv.bucket_ban("b", duration=1.0, capacity=0, interval=1.0)
        with bad_input("interval"):
            await kv.bucket_ban("b", duration=1.0, capacity=2, interval=0)
        with bad_input("key", ValueError):
            await kv.bucket_take("", capacity=2, interval=1.0)
        assert await kv.ttl("b") is None, "rejected calls must create nothing"

    async def test_kv_concurrent_takes_respect_capacity(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        ports = [kv_of(c) for c in await self.clients(open_backend)]
        results: list[BucketResult] = await gather(
            port.bucket_take("b", capacity=5, interval=LONG) for port in ports for _ in range(4)
        )
        allowed = [r for r in results if r.allowed]
        assert len(allowed) == 5, f"{len(allowed)} takes allowed from a bucket of 5"
        assert sorted(r.remaining for r in allowed) == [0, 1, 2, 3, 4]
