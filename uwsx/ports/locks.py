"""Locks port: leases with owner tokens and monotonic fencing numbers; session locks.

Specification
=============

**Leases.** A lease on ``key`` is held by one ``owner`` token (chosen by the caller, unique per
acquisition attempt) until it expires ``ttl`` seconds later on the *backend* clock, is renewed,
or is released. ``acquire`` succeeds only when no live lease exists. At most one live lease per
key exists at any backend instant.

**Fencing.** Every successful ``acquire`` and ``seize`` returns a fence: an ``int`` strictly
greater than every fence previously issued for that key, including after expiry, release and
restarts of the client. Renewing keeps the fence. A resource protected by the lock must reject
writes carrying a fence lower than the highest it has seen: that, not the lease, is what makes a
paused former holder harmless.

Fences are hybrid-logical-clock values: the backend issues ``max(stored counter + 1, backend
clock in microseconds)`` and stores it. While the stored counter survives, fences strictly
increase whatever the clocks do. When the backend loses the counter's latest values (a failover
to a replica that asynchronous replication had not reached, a restart without persistence), the
next fence is still greater than every earlier one provided the clock of the server issuing it
does not read earlier than the clock that issued an earlier fence by more than the real time
between the two acquisitions. Fences are therefore large and not contiguous: compare them, never
count with them.

``renew`` (compare-and-expire) and ``release`` (compare-and-delete) act only when the live lease
belongs to ``owner``; they return False otherwise and change nothing. ``seize`` installs a lease
for ``owner`` unconditionally, replacing any holder (the task runner's external fence mirror,
whose source of truth lives elsewhere).

**Session locks** (capability ``session_locks``) are held by the backend *session* (the
connection) rather than by a TTL: ``try_session_lock`` takes one if free; it is released by
``release_session_lock`` or automatically when the session dies (Postgres advisory locks).
``session_lock_held`` turns False once the session that took it is gone. Without the
capability these raise :class:`uwsx.errors.UnsupportedBackendError`.

Every operation is one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Holder", "Lease", "Locks", "SessionLock"]


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease granted to ``owner`` with its fencing number."""

    key: str
    owner: str
    fence: int
    ttl: float


@dataclass(frozen=True, slots=True)
class Holder:
    """The current live lease on a key; ``ttl`` is the remaining lifetime in seconds."""

    owner: str
    fence: int
    ttl: float


@dataclass(frozen=True, slots=True)
class SessionLock:
    """A lock held by a backend session; ``fence`` follows the same rule as lease fences."""

    key: str
    fence: int
    session: str


@runtime_checkable
class Locks(Protocol):
    """Leases, fences and session locks (see the module docstring)."""

    async def acquire(self, key: str, owner: str, *, ttl: float) -> Lease | None:
        """Take the lease if no live lease exists; None when held by someone."""
        ...

    async def renew(self, key: str, owner: str, *, ttl: float) -> bool:
        """Extend ``owner``'s live lease to ``ttl`` seconds from now."""
        ...

    async def release(self, key: str, owner: str) -> bool:
        """Drop ``owner``'s live lease."""
        ...

    async def holder(self, key: str) -> Holder | None:
        """The live lease, if any."""
        ...

    async def seize(self, key: str, owner: str, *, ttl: float) -> Lease:
        """Install ``owner``'s lease unconditionally, with a new fence."""
        ...

    async def try_session_lock(self, key: str) -> SessionLock | None:
        """Take the session lock if free (re-entrant for the same session: returns the lock)."""
        ...

    async def release_session_lock(self, lock: SessionLock) -> bool:
        """Release a session lock this session holds."""
        ...

    async def session_lock_held(self, lock: SessionLock) -> bool:
        """True while this session still holds ``lock``."""
        ...
