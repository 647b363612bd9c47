"""Small test helpers shared by test modules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from uwsx.ports.backend import Backend

#: A feature test's ``open_backend`` fixture: another client on the test's storage and prefix.
Opener = Callable[[], Awaitable[Backend]]


async def eventually(check: Callable[[], bool], *, timeout: float = 5.0, what: str = "") -> None:
    """Await until ``check()`` is true (yielding to the loop; bounded for real servers)."""
    deadline = time.monotonic() + timeout
    spins = 0
    while not check():
        spins += 1
        if spins < 50:
            await asyncio.sleep(0)
            continue
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or check}")
        await asyncio.sleep(0.005)


async def settle(rounds: int = 20) -> None:
    """Let already-scheduled callbacks run (no wall time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def eventually_async(
    check: Callable[[], Awaitable[bool]],
    *,
    step: Callable[[], Awaitable[None]] | None = None,
    timeout: float = 5.0,
    what: str = "",
) -> None:
    """Await until ``await check()`` is true. ``step`` runs between checks (e.g. advancing a
    manual clock); on a real server the loop is bounded by ``timeout`` seconds of wall time."""
    deadline = time.monotonic() + timeout
    spins = 0
    while not await check():
        spins += 1
        if step is not None:
            await step()
        if spins < 50:
            await asyncio.sleep(0)
            continue
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or check}")
        await asyncio.sleep(0.01)
