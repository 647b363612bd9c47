"""``MemoryLocks``: leases with fences, and session locks tied to a backend instance.

Fences are hybrid-logical-clock values: each grant issues
``max(stored fence + 1, backend monotonic time in microseconds)`` and stores it. The stored
counter makes fences strictly increase per key; the clock term keeps them increasing when the
counter is lost (the simulator's failover to a lagging replica, a restart without persistence),
because the backend clock has moved past every fence issued before. The clock is the store's
monotonic one: it never steps back, and the simulator pins it on replicas to the primary's
apply time, so a replica re-running a grant computes the very fence the primary issued.
"""

from __future__ import annotations

from uwsx.memory.store import MemoryStore
from uwsx.ports.checks import check_key, check_ttl
from uwsx.ports.locks import Holder, Lease, SessionLock

__all__ = ["MemoryLocks"]


def _micros(seconds: float) -> int:
    # Truncated like Redis TIME; a negative reading (a test clock) always loses to counter + 1.
    return int(seconds * 1_000_000)


class MemoryLocks:
    """The Locks port. ``session`` identifies the owning backend for session locks; the
    backend ends it (releasing its locks) when it closes or its connection is reset."""

    def __init__(self, store: MemoryStore, prefix: str, session: str) -> None:
        self._store = store
        self._prefix = prefix
        self.session = session
        self.session_alive = True

    def _k(self, key: str) -> str:
        return self._prefix + check_key(key)

    def _live(self, k: str) -> tuple[str, int, float] | None:
        lease = self._store.leases.get(k)
        if lease is not None and lease[2] <= self._store.now():
            del self._store.leases[k]
            return None
        return lease

    def _next_fence(self, fence_key: str) -> int:
        """Issue and store the key's next fence (see the module docstring)."""
        fence = max(self._store.fences.get(fence_key, 0) + 1, _micros(self._store.now()))
        self._store.fences[fence_key] = fence
        return fence

    def _grant(self, k: str, key: str, owner: str, ttl: float) -> Lease:
        fence = self._next_fence(k)
        self._store.leases[k] = (owner, fence, self._store.now() + ttl)
        return Lease(key, owner, fence, ttl)

    async def acquire(self, key: str, owner: str, *, ttl: float) -> Lease | None:
        k, t = self._k(key), check_ttl(ttl, optional=False)
        check_key(owner, "owner")
        assert t is not None
        if self._live(k) is not None:
            return None
        return self._grant(k, key, owner, t)

    async def renew(self, key: str, owner: str, *, ttl: float) -> bool:
        k, t = self._k(key), check_ttl(ttl, optional=False)
        check_key(owner, "owner")
        assert t is not None
        lease = self._live(k)
        if lease is None or lease[0] != owner:
            return False
        self._store.leases[k] = (owner, lease[1], self._store.now() + t)
        return True

    async def release(self, key: str, owner: str) -> bool:
        k = self._k(key)
        check_key(owner, "owner")
        lease = self._live(k)
        if lease is None or lease[0] != owner:
            return False
        del self._store.leases[k]
        return True

    async def holder(self, key: str) -> Holder | None:
        lease = self._live(self._k(key))
        if lease is None:
            return None
        return Holder(lease[0], lease[1], max(0.0, lease[2] - self._store.now()))

    async def seize(self, key: str, owner: str, *, ttl: float) -> Lease:
        k, t = self._k(key), check_ttl(ttl, optional=False)
        check_key(owner, "owner")
        assert t is not None
        return self._grant(k, key, owner, t)

    # -- session locks ---------------------------------------------------------------
    async def try_session_lock(self, key: str) -> SessionLock | None:
        k = self._k(key)
        held = self._store.session_locks.get(k)
        if held is not None:
            if held[0] == self.session and self.session_alive:
                return SessionLock(key, held[1], self.session)
            return None
        if not self.session_alive:
            return None
        fence = self._next_fence("\x00session:" + k)
        self._store.session_locks[k] = (self.session, fence)
        return SessionLock(key, fence, self.session)

    async def release_session_lock(self, lock: SessionLock) -> bool:
        k = self._k(lock.key)
        held = self._store.session_locks.get(k)
        # The fence must match too: a handle from an earlier acquisition of the same key by
        # this session must not release the current one (Postgres compares it as well).
        if held != (lock.session, lock.fence) or lock.session != self.session:
            return False
        del self._store.session_locks[k]
        return True

    async def session_lock_held(self, lock: SessionLock) -> bool:
        held = self._store.session_locks.get(self._k(lock.key))
        return (
            self.session_alive
            and held is not None
            and held == (lock.session, lock.fence)
            and lock.session == self.session
        )

    def end_session(self, new_session: str | None) -> None:
        """Release every session lock this session holds (connection closed or reset). With
        ``new_session`` the backend continues on a fresh session."""
        mine = [k for k, (s, _) in self._store.session_locks.items() if s == self.session]
        for k in mine:
            del self._store.session_locks[k]
        if new_session is None:
            self.session_alive = False
        else:
            self.session = new_session
