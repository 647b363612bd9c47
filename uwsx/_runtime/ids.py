"""Identifiers and randomness, real or seeded."""

from __future__ import annotations

import os
import random as _random
import uuid
from typing import Protocol


class RandomSource(Protocol):
    def random(self) -> float:
        """A float in [0, 1)."""
        ...

    def uniform(self, low: float, high: float) -> float: ...

    def randbytes(self, n: int) -> bytes: ...


class Ids(Protocol):
    def hex(self, nbytes: int = 8) -> str:
        """``2 * nbytes`` lowercase hex characters (instance ids are ``hex(8)``)."""
        ...

    def uuid(self) -> str:
        """A random (version 4) UUID in canonical text form."""
        ...


class SystemRandom:
    """OS randomness for production jitter."""

    def __init__(self) -> None:
        self._rng = _random.SystemRandom()

    def random(self) -> float:
        return self._rng.random()

    def uniform(self, low: float, high: float) -> float:
        return self._rng.uniform(low, high)

    def randbytes(self, n: int) -> bytes:
        return os.urandom(n)


class SeededRandom:
    """A deterministic stream of randomness from an integer seed."""

    def __init__(self, seed: int) -> None:
        self._rng = _random.Random(seed)

    def random(self) -> float:
        return self._rng.random()

    def uniform(self, low: float, high: float) -> float:
        return self._rng.uniform(low, high)

    def randbytes(self, n: int) -> bytes:
        return self._rng.randbytes(n)


class RealIds:
    """Ids from the OS random source."""

    def hex(self, nbytes: int = 8) -> str:
        return os.urandom(nbytes).hex()

    def uuid(self) -> str:
        return str(uuid.uuid4())


class SeededIds:
    """Ids drawn from a :class:`RandomSource` (the simulator's per-node stream)."""

    def __init__(self, source: RandomSource) -> None:
        self._source = source

    def hex(self, nbytes: int = 8) -> str:
        return self._source.randbytes(nbytes).hex()

    def uuid(self) -> str:
        return str(uuid.UUID(bytes=self._source.randbytes(16), version=4))
