"""Planted bugs: each one breaks a promise a checker guards, to prove the checker bites.

``uwsx sim explore SCENARIO --mutant NAME`` runs with the bug in place; the exploration must
report a violation of the mutant's invariant within a few hundred seeds. A mutant patches a
class attribute for the duration of one run and always restores it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from uwsx.ports.locks import Lease

__all__ = ["MUTANTS", "Mutant", "applied_mutant"]


@dataclass(frozen=True, slots=True)
class Mutant:
    name: str
    description: str
    scenario: str
    invariant: str
    target: str  # "module:Class.attribute"
    replacement: Callable[[Any], Any]  # gets the original, returns the patched attribute


def _release_without_owner_check(original: Any) -> Any:
    async def release(self: Any, key: str, owner: str) -> bool:
        k = self._k(key)
        if self._live(k) is None:
            return False
        del self._store.leases[k]  # the bug: whoever asks, the lease goes
        return True

    return release


def _fence_restarts_after_expiry(original: Any) -> Any:
    def grant(self: Any, k: str, key: str, owner: str, ttl: float) -> Lease:
        # the bug: the fence lives with the lease, so it restarts once a lease expires
        previous = self._store.leases.get(k)
        fence = 1 if previous is None else previous[1] + 1
        self._store.leases[k] = (owner, fence, self._store.now() + ttl)
        return Lease(key, owner, fence, ttl)

    return grant


def _no_fence_check(original: Any) -> Any:
    return False


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant(
            "lock-release-no-owner-check",
            "Locks.release deletes the live lease whoever asks (a zombie frees its successor)",
            "lock-pause",
            "LK-3",
            "uwsx.memory.locks:MemoryLocks.release",
            _release_without_owner_check,
        ),
        Mutant(
            "lock-fence-reset",
            "fences are stored with the lease, so they restart after a lease expires",
            "lock-pause",
            "LK-1",
            "uwsx.memory.locks:MemoryLocks._grant",
            _fence_restarts_after_expiry,
        ),
        Mutant(
            "resource-no-fence-check",
            "the protected resource accepts any fence (leases alone are not safe)",
            "lock-pause",
            "LK-2",
            "uwsx_sim.workloads.locks:FencedResource.check_fence",
            _no_fence_check,
        ),
    )
}


def register(mutant: Mutant) -> None:
    """Add a mutant (feature workloads register theirs when imported)."""
    MUTANTS[mutant.name] = mutant


@contextmanager
def applied_mutant(name: str | None) -> Iterator[Mutant | None]:
    """Patch the named mutant in for the duration of the block (no-op for None)."""
    if name is None:
        yield None
        return
    _load_feature_mutants()
    mutant = MUTANTS.get(name)
    if mutant is None:
        raise LookupError(f"unknown mutant {name!r}; known: {', '.join(sorted(MUTANTS))}")
    module_name, _, path = mutant.target.partition(":")
    cls_name, _, attr = path.rpartition(".")
    owner: Any = importlib.import_module(module_name)
    for part in cls_name.split("."):
        owner = getattr(owner, part)
    original = owner.__dict__[attr]
    setattr(owner, attr, mutant.replacement(original))
    try:
        yield mutant
    finally:
        setattr(owner, attr, original)


def _load_feature_mutants() -> None:
    """Feature workloads define their mutants next to their checkers."""
    for module in (
        "bus",
        "replay",
        "replay_mutants",
        "presence",
        "groups",
        "sharded_bus",
        "cursor",
    ):
        try:
            importlib.import_module(f"uwsx_sim.workloads.{module}")
        except ImportError:
            continue
