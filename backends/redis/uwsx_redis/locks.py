"""``RedisLocks``: leases with owner tokens and fencing numbers, one script per operation.

A lease is the string ``"<fence>:<owner>"`` with a millisecond TTL on the server clock; next
to it (same hash tag, so the same slot) a fence counter that never expires, advanced in the
same script that installs the lease. Redis has no connection-scoped locks that die with the
session, so ``session_locks`` is not offered.

Fences are hybrid-logical-clock values: the script issues ``max(counter + 1, TIME in
microseconds)`` and stores it as the new counter. Replication is asynchronous, so a failover can
lose the counter's latest writes (and a restart without persistence loses the counter); the
clock term still puts the next fence above every fence issued before, provided the serving
node's clock has not stepped back by more than the time since that fence was issued. The
counter alone covers a clock that stands still or steps back while the counter survives.
"""

from __future__ import annotations

from uwsx.errors import UnsupportedBackendError
from uwsx.ports.checks import check_key, check_ttl
from uwsx.ports.locks import Holder, Lease, SessionLock
from uwsx_redis._context import Context, ms, number, text

__all__ = ["RedisLocks"]

_NO_SESSION = (
    "session locks need the session_locks capability (connection-scoped locks, e.g. "
    "Postgres advisory locks); Redis leases expire by TTL instead: use acquire/renew"
)


class RedisLocks:
    """The Locks port (see :mod:`uwsx.ports.locks`)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def _keys(self, key: str) -> tuple[str, str]:
        return self._ctx.keys.lock(check_key(key))

    @staticmethod
    def _ttl(ttl: float) -> float:
        t = check_ttl(ttl, optional=False)
        assert t is not None
        return t

    async def _install(self, key: str, owner: str, ttl: float, *, seize: bool) -> Lease | None:
        lease, fence = self._keys(key)
        check_key(owner, "owner")
        t = self._ttl(ttl)
        reply = await self._ctx.eval(
            "lock_acquire", [lease, fence], [owner, ms(t), "1" if seize else "0"]
        )
        if reply is None:
            return None
        return Lease(key, owner, number(reply), t)

    async def acquire(self, key: str, owner: str, *, ttl: float) -> Lease | None:
        return await self._install(key, owner, ttl, seize=False)

    async def seize(self, key: str, owner: str, *, ttl: float) -> Lease:
        lease = await self._install(key, owner, ttl, seize=True)
        assert lease is not None
        return lease

    async def renew(self, key: str, owner: str, *, ttl: float) -> bool:
        lease, _ = self._keys(key)
        t = self._ttl(ttl)
        check_key(owner, "owner")
        return number(await self._ctx.eval("lock_owned", [lease], [owner, "renew", ms(t)])) == 1

    async def release(self, key: str, owner: str) -> bool:
        lease, _ = self._keys(key)
        check_key(owner, "owner")
        return number(await self._ctx.eval("lock_owned", [lease], [owner, "release", ""])) == 1

    async def holder(self, key: str) -> Holder | None:
        lease, _ = self._keys(key)
        reply = await self._ctx.eval("lock_holder", [lease], readonly=True)
        if reply is None:
            return None
        fence, _, owner = text(reply[0]).partition(":")
        left = number(reply[1])
        return Holder(owner, int(fence), max(0, left) / 1000.0)

    async def try_session_lock(self, key: str) -> SessionLock | None:
        raise UnsupportedBackendError(_NO_SESSION)

    async def release_session_lock(self, lock: SessionLock) -> bool:
        raise UnsupportedBackendError(_NO_SESSION)

    async def session_lock_held(self, lock: SessionLock) -> bool:
        raise UnsupportedBackendError(_NO_SESSION)
