"""Clocks: monotonic seconds for timeouts, wall seconds for timestamps, and sleep."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Time as a feature sees it. Durations are float seconds everywhere."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch; may jump (NTP, clock faults in the simulator)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend for ``seconds`` of this clock's time (negative means zero)."""
        ...


class RealClock:
    """The process clocks; ``sleep`` is the event loop's."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


async def wait_event(event: asyncio.Event, seconds: float | None, clock: Clock) -> bool:
    """Wait until ``event`` is set or ``seconds`` of ``clock`` pass; True if set.

    ``asyncio.wait_for`` measures the loop's time; this measures the given clock, which under
    the simulator may run at another rate than the loop.
    """
    if event.is_set():
        return True
    if seconds is None:
        await event.wait()
        return True
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waiter.cancel()
    return event.is_set()
