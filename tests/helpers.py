"""Small test helpers shared by test modules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


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
