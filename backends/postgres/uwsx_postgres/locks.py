"""``PostgresLocks``: leases in ``uwsx_locks`` and session-scoped advisory locks.

Leases: one row per key; ``acquire`` is an upsert that only replaces an expired row, ``renew``
and ``release`` match the owner, all against the database clock. Fences come from the sequence
``uwsx_lock_fence``, so every fence is greater than every fence issued before it, for any key,
across expiry, release and client restarts.

Session locks: ``pg_try_advisory_lock`` on a connection this backend holds for the purpose. The
lock belongs to that server session and is released when it ends (``close()``, a crash, a
network failure, ``pg_terminate_backend``); after that ``session_lock_held`` is False and the
next ``try_session_lock`` opens a new session. Keys map to 64-bit lock ids by BLAKE2b of the
prefixed key.
"""

from __future__ import annotations

import asyncio
import hashlib

from uwsx import _runtime
from uwsx.errors import Indeterminate, Unavailable
from uwsx.ports.checks import check_key, check_ttl
from uwsx.ports.locks import Holder, Lease, SessionLock
from uwsx_postgres._db import Database
from uwsx_postgres._driver import Dedicated, quote_ident
from uwsx_postgres.schema import LOCK_FENCE_SEQUENCE, LOCK_TABLE, table_set

__all__ = ["PostgresLocks", "advisory_id"]

_TABLES = table_set("locks")
_L = quote_ident(LOCK_TABLE)
_NEXT = f"nextval('{quote_ident(LOCK_FENCE_SEQUENCE)}')"
_EXP = "now() + $3::float8 * interval '1 second'"

# $1 key, $2 owner, $3 ttl -> fence
_ACQUIRE = f"""
INSERT INTO {_L} AS l (key, owner, fence, expires_at) VALUES ($1::text, $2::text, {_NEXT}, {_EXP})
ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, fence = EXCLUDED.fence,
  expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= now()
RETURNING l.fence"""
_SEIZE = _ACQUIRE.replace("WHERE l.expires_at <= now()\n", "")
_RENEW = (
    f"UPDATE {_L} SET expires_at = {_EXP} "
    "WHERE key = $1::text AND owner = $2::text AND expires_at > now() RETURNING 1"
)
_RELEASE = (
    f"DELETE FROM {_L} WHERE key = $1::text AND owner = $2::text AND expires_at > now() RETURNING 1"
)
_HOLDER = (
    f"SELECT owner, fence, extract(epoch FROM expires_at - now())::float8 FROM {_L} "
    "WHERE key = $1::text AND expires_at > now()"
)
_SWEEP = f"""
WITH d AS (DELETE FROM {_L} l WHERE l.key IN (
    SELECT x.key FROM {_L} x WHERE x.expires_at <= now() LIMIT $1::int)
  AND l.expires_at <= now() RETURNING 1)
SELECT count(*)::int FROM d"""

_TRY = (
    f"SELECT x.l, CASE WHEN x.l THEN {_NEXT} END "
    "FROM (SELECT pg_try_advisory_lock($1::bigint) AS l) x"
)
_UNLOCK = "SELECT pg_advisory_unlock($1::bigint)"
_HELD = """
SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
  AND granted AND objsubid = 1 AND classid::bigint = $1::bigint AND objid::bigint = $2::bigint)"""


def advisory_id(full_key: str) -> int:
    """The signed 64-bit advisory lock id of a prefixed key."""
    digest = hashlib.blake2b(full_key.encode(), digest_size=8, person=b"uwsx-lock").digest()
    return int.from_bytes(digest, "big", signed=True)


async def _sweep(db: Database, batch: int) -> int:
    rows = await db.fetch(_SWEEP, batch)
    return int(rows[0][0])


class PostgresLocks:
    """The Locks port."""

    def __init__(self, db: Database, prefix: str) -> None:
        self._db = db
        self._prefix = prefix
        self._conn: Dedicated | None = None
        self._session = ""
        self._held: dict[str, SessionLock] = {}
        self._opening = asyncio.Lock()
        self._closed = False

    def _k(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def _ready(self) -> None:
        await self._db.ensure(_TABLES, _sweep)

    # -- leases ------------------------------------------------------------------
    async def acquire(self, key: str, owner: str, *, ttl: float) -> Lease | None:
        k, t = self._k(key), check_ttl(ttl, optional=False)
        check_key(owner, "owner")
        assert t is not None
        await self._ready()
        row = await self._db.fetchrow(_ACQUIRE, k, owner, t)
        return None if row is None else Lease(key, owner, int(row[0]), t)

    async def renew(self, key: str, owner: str, *, ttl: float) -> bool:
        k, t = self._k(key), check_ttl(ttl, optional=False)
        check_key(owner, "owner")
        await self._ready()
        return await self._db.fetchrow(_RENEW, k, owner, t) is not None

    async def release(self, key: str, owner: str) -> bool:
        k = self._k(key)
        check_key(owner, "owner")
        await self._ready()
        return await self._db.fetchrow(_RELEASE, k, owner) is not None

    async def holder(self, key: str) -> Holder | None:
        k = self._k(key)
        await self._ready()
        row = await self._db.fetchrow(_HOLDER, k, write=False)
        if row is None:
            return None
        owner, fence, left = row
        return Holder(str(owner), int(fence), max(0.0, float(left)))

    async def seize(self, key: str, owner: str, *, ttl: float) -> Lease:
        k, t = self._k(key), check_ttl(ttl, optional=False)
        check_key(owner, "owner")
        assert t is not None
        await self._ready()
        row = await self._db.fetchrow(_SEIZE, k, owner, t)
        assert row is not None
        return Lease(key, owner, int(row[0]), t)

    # -- session locks -------------------------------------------------------------
    def _alive(self) -> bool:
        return self._conn is not None and self._conn.alive

    async def _session_conn(self) -> Dedicated:
        async with self._opening:
            if self._closed:
                raise Unavailable("the postgres backend is closed")
            conn = self._conn
            if conn is not None and conn.alive:
                return conn
            self._held.clear()
            if conn is not None:
                await conn.close()
            self._conn = conn = await self._db.driver.dedicated()
            self._session = f"{conn.pid}:{_runtime.current().ids.hex(4)}"
            return conn

    async def try_session_lock(self, key: str) -> SessionLock | None:
        k = self._k(key)
        held = self._held.get(k)
        if held is not None and self._alive() and held.session == self._session:
            return held
        await self._ready()
        conn = await self._session_conn()
        try:
            rows = await conn.fetch(_TRY, [advisory_id(k)])
        except Indeterminate as exc:
            # The session died with the statement, so any lock it took is already gone.
            raise Unavailable(f"session lock {key!r} not taken: {exc}") from exc
        taken, fence = rows[0]
        if not taken:
            return None
        lock = SessionLock(key, int(fence), self._session)
        self._held[k] = lock
        return lock

    async def release_session_lock(self, lock: SessionLock) -> bool:
        k = self._k(lock.key)
        if self._held.get(k) != lock:
            return False
        del self._held[k]
        conn = self._conn
        if conn is None or not conn.alive or lock.session != self._session:
            return False
        try:
            rows = await conn.fetch(_UNLOCK, [advisory_id(k)])
        except Indeterminate:
            return False
        return bool(rows[0][0])

    async def session_lock_held(self, lock: SessionLock) -> bool:
        k = self._k(lock.key)
        conn = self._conn
        if self._held.get(k) != lock or conn is None or not conn.alive:
            return False
        lock_id = advisory_id(k) & 0xFFFF_FFFF_FFFF_FFFF
        try:
            rows = await conn.fetch(_HELD, [lock_id >> 32, lock_id & 0xFFFF_FFFF])
        except (Indeterminate, Unavailable):
            return False
        return bool(rows[0][0])

    async def close(self) -> None:
        """End the session (releasing its locks)."""
        async with self._opening:
            self._closed = True
            self._held.clear()
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()
