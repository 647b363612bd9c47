"""Seeded randomness streams and per-instance virtual clocks.

Together with :mod:`uwsx_sim.loop` this is the only simulator code allowed to touch
``random`` and ``asyncio.sleep`` (ruff TID251 per-file ignore).

Guarantees:

* every stream is a pure function of ``(master seed, name)``: ``blake2b(master || name)`` seeds
  an independent Mersenne Twister, so removing one fault never perturbs the network, scheduling
  or workload streams (what makes shrinking by deleting faults work);
* a :class:`SimClock` is piecewise linear in loop time: ``monotonic`` never goes backwards and
  changes slope only when its rate is changed; ``wall`` is ``monotonic`` plus an offset that clock
  faults may step in either direction.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections.abc import Callable, MutableSequence, Sequence
from typing import TypeVar

__all__ = ["BuggifySites", "Rng", "SimClock", "derive_seed", "parse_seed", "wall_seconds"]

_T = TypeVar("_T")


def wall_seconds() -> float:
    """Real elapsed-time counter, for reporting speed only (never on a decision path)."""
    return time.perf_counter()


def derive_seed(master: int, name: str) -> int:
    """A 64-bit seed for the stream ``name`` of run ``master`` (stable across processes)."""
    digest = hashlib.blake2b(
        master.to_bytes(16, "little", signed=False) + name.encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little")


def parse_seed(text: str | int) -> int:
    """``"42"``, ``"0x2a"`` or ``42`` to a non-negative int (seeds are printed in hex)."""
    value = text if isinstance(text, int) else int(str(text), 0)
    if value < 0 or value >= 2**128:
        raise ValueError(f"seed out of range: {text!r}")
    return value


class Rng:
    """A named deterministic stream with the draws the simulator needs.

    Satisfies :class:`uwsx._runtime.RandomSource` so it can be a node's ``random``.
    """

    __slots__ = ("_r", "name", "seed")

    def __init__(self, seed: int, name: str = "") -> None:
        self.seed = seed
        self.name = name
        self._r = random.Random(seed)

    @classmethod
    def stream(cls, master: int, name: str) -> Rng:
        return cls(derive_seed(master, name), name)

    def split(self, name: str) -> Rng:
        """A child stream independent of how much of this one was consumed."""
        return Rng.stream(self.seed, name)

    def random(self) -> float:
        return self._r.random()

    def uniform(self, low: float, high: float) -> float:
        return self._r.uniform(low, high)

    def randbytes(self, n: int) -> bytes:
        return self._r.randbytes(n)

    def randint(self, low: int, high: int) -> int:
        """An int in ``[low, high]``."""
        return self._r.randint(low, high)

    def chance(self, p: float) -> bool:
        return p > 0.0 and self._r.random() < p

    def choice(self, items: Sequence[_T]) -> _T:
        return items[self._r.randrange(len(items))]

    def sample(self, items: Sequence[_T], k: int) -> list[_T]:
        return self._r.sample(list(items), k)

    def shuffle(self, items: MutableSequence[object]) -> None:
        self._r.shuffle(items)

    def expovariate(self, mean: float) -> float:
        return self._r.expovariate(1.0 / mean) if mean > 0 else 0.0

    def long_tail(self, ceiling: float) -> float:
        """FoundationDB's rare long delay: ``ceiling * r**1000`` (mostly ~0, occasionally big)."""
        return ceiling * self._r.random() ** 1000


class BuggifySites(frozenset[str]):
    """The BUGGIFY sites active in one run, decided per site name on first sight.

    :func:`uwsx._runtime.buggify` asks ``site in sites``; a site is enabled with probability
    1/4, derived from the run seed and the site name alone (so adding a site elsewhere does not
    change which others fire).
    """

    _seed: int

    def __new__(cls, seed: int) -> BuggifySites:
        self = super().__new__(cls)
        self._seed = seed
        return self

    def __contains__(self, site: object) -> bool:
        if not isinstance(site, str):
            return False
        return derive_seed(self._seed, "buggify:" + site) % 4 == 0


class SimClock:
    """One instance's view of time, derived from the loop's virtual time.

    :param now: the loop's time function (seconds).
    :param rate: how fast this clock runs relative to true time (drift: 1.001 is 1 ms/s fast).
    :param wall_offset: wall seconds at loop time 0 (the simulated epoch plus skew).
    """

    __slots__ = ("_base_loop", "_base_mono", "_now", "rate", "wall_offset")

    EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: wall clocks start here at loop time 0

    def __init__(
        self, now: Callable[[], float], *, rate: float = 1.0, wall_offset: float = 0.0
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"clock rate must be positive, got {rate!r}")
        self._now = now
        self._base_loop = now()
        self._base_mono = self._base_loop
        self.rate = rate
        self.wall_offset = self.EPOCH + wall_offset

    def monotonic(self) -> float:
        return self._base_mono + (self._now() - self._base_loop) * self.rate

    def wall(self) -> float:
        return self.monotonic() + self.wall_offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.rate)

    def set_rate(self, rate: float) -> None:
        """Change the slope from now on (monotonic stays continuous)."""
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"clock rate must be positive, got {rate!r}")
        self._base_mono = self.monotonic()
        self._base_loop = self._now()
        self.rate = rate

    def step_wall(self, delta: float) -> None:
        """Jump the wall clock by ``delta`` seconds (NTP step); monotonic is unaffected."""
        self.wall_offset += delta

    def skew(self) -> float:
        """Wall clock minus true wall time (true time = loop time + epoch)."""
        return self.wall() - (self._now() + self.EPOCH)
