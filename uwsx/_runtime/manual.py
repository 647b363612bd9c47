"""``ManualClock``: a clock tests move by hand (exported as ``uwsx.testing.ManualClock``)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Iterator

import uwsx._runtime as _runtime
from uwsx._runtime.ids import SeededIds, SeededRandom

__all__ = ["ManualClock", "manual_runtime"]


class ManualClock:
    """Time stands still until :meth:`advance`; ``sleep`` wakes when time passes its deadline.

    ``wall()`` is ``monotonic()`` plus a fixed epoch offset.
    """

    def __init__(self, start: float = 0.0, *, epoch: float = 1_700_000_000.0) -> None:
        self._now = start
        self._epoch = epoch
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._serial = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._epoch + self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._serial), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in deadline order (each gets to run)."""
        for _ in range(5):  # let freshly spawned tasks reach their sleep first
            await asyncio.sleep(0)
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = target
        for _ in range(5):
            await asyncio.sleep(0)


@contextlib.contextmanager
def manual_runtime(clock: ManualClock | None = None, *, seed: int = 1) -> Iterator[ManualClock]:
    """Install a runtime with a :class:`ManualClock` and seeded ids for the block."""
    clock = clock or ManualClock()
    rng = SeededRandom(seed)
    runtime = _runtime.Runtime(clock=clock, ids=SeededIds(rng), random=rng, name="manual")
    with _runtime.use(runtime):
        yield clock
