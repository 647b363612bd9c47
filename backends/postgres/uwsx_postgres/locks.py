"""``PostgresLocks``: leases in ``uwsx_locks`` and session-scoped advisory locks.

Leases: one row per key; ``acquire`` is an upsert that only replaces an expired row, ``renew``
and ``release`` match the owner, all against the database clock.

Fences are hybrid-logical-clock values, as on the other backends: a grant issues
``GREATEST(nextval, database clock in microseconds)`` (and, when the key's row still exists, at
least its fence + 1), then moves the sequence ``uwsx_lock_fence`` up to the issued fence with
``setval`` when the clock won. The sequence is the stored counter: it keeps every fence above
every fence issued before it, for any key, across expiry, release, sweeping, client restarts and
a database clock that steps back. The clock term covers what the sequence cannot: a failover to
a standby that asynchronous replication had not brought up to date (the sequence and the rows
lose their latest values), as long as the new primary's clock reads later than the lost grants.
Two grants running concurrently may finish their ``setval`` out of order, leaving the sequence a
few microseconds below the highest fence; only a clock that also steps back could then repeat a
fence, and on a key whose row is gone (the row term covers the others).

``setval`` needs the UPDATE privilege on the sequence, which its owner (the role that ran the
migration) has. A role with only USAGE (``GRANT USAGE ON ALL SEQUENCES``) still gets
``GREATEST(nextval, clock)`` fences with the row term, but the sequence then does not follow the
clock, so after a release the next fence relies on the clock alone; a warning is logged once.

Session locks: ``pg_try_advisory_lock`` on a connection this backend holds for the purpose. The
lock belongs to that server session and is released when it ends (``close()``, a crash, a
network failure, ``pg_terminate_backend``); after that ``session_lock_held`` is False and the
next ``try_session_lock`` opens a new session. Keys map to 64-bit lock ids by BLAKE2b of the
prefixed key. Their fences follow the same rule as lease fences (there is no row term).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from uwsx import _runtime
from uwsx.errors import Indeterminate, Unavailable
from uwsx.ports.checks import check_key, check_ttl
from uwsx.ports.locks import Holder, Lease, SessionLock
from uwsx_postgres._db import Database
from uwsx_postgres._driver import Dedicated, quote_ident
from uwsx_postgres.schema import LOCK_FENCE_SEQUENCE, LOCK_TABLE, table_set

__all__ = ["PostgresLocks", "advisory_id"]

log = logging.getLogger("uwsx.postgres")

_TABLES = table_set("locks")
_L = quote_ident(LOCK_TABLE)
_SEQ = quote_ident(LOCK_FENCE_SEQUENCE)
_EXP = "now() + $3::float8 * interval '1 second'"
# The database clock in microseconds (extract gives numeric on 14+, float8 on 13).
_CLOCK = "floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
# One candidate fence per statement: the sequence's next value and the clock.
_CANDIDATE = f"f AS (SELECT nextval('{_SEQ}') AS n, {_CLOCK} AS c"


def _advance(fence: str, *, setval: bool) -> str:
    """The select-list item that moves the sequence up to ``fence`` when the clock (or the
    row) won over ``nextval``; NULL otherwise, or always without the UPDATE privilege."""
    if not setval:
        return "NULL::bigint"
    return f"CASE WHEN {fence} > f.n THEN setval('{_SEQ}', {fence}) END"


def _grant_sql(*, seize: bool, setval: bool) -> str:
    """$1 key, $2 owner, $3 ttl -> (fence, setval result)."""
    expired = "" if seize else "\n  WHERE l.expires_at <= now()"
    return f"""
WITH {_CANDIDATE}),
g AS (
  INSERT INTO {_L} AS l (key, owner, fence, expires_at)
  SELECT $1::text, $2::text, GREATEST(f.n, f.c), {_EXP} FROM f
  ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner,
    fence = GREATEST(EXCLUDED.fence, l.fence + 1), expires_at = EXCLUDED.expires_at{expired}
  RETURNING l.fence)
SELECT g.fence, {_advance("g.fence", setval=setval)} FROM g, f"""


def _try_sql(*, setval: bool) -> str:
    """$1 advisory id -> (taken, fence or NULL, setval result)."""
    return f"""
WITH x AS (SELECT pg_try_advisory_lock($1::bigint) AS l),
{_CANDIDATE} FROM x WHERE x.l)
SELECT x.l, GREATEST(f.n, f.c), {_advance("f.c", setval=setval)} FROM x LEFT JOIN f ON true"""


#: statements by whether the role may ``setval`` the sequence
_ACQUIRE = {v: _grant_sql(seize=False, setval=v) for v in (True, False)}
_SEIZE = {v: _grant_sql(seize=True, setval=v) for v in (True, False)}
_TRY = {v: _try_sql(setval=v) for v in (True, False)}
_CAN_SETVAL = f"SELECT has_sequence_privilege('{_SEQ}', 'UPDATE')"

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
        #: whether this role may ``setval`` the fence sequence (asked once, on the first grant)
        self._setval: bool | None = None

    def _k(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def _ready(self) -> None:
        await self._db.ensure(_TABLES, _sweep)

    async def _ready_to_grant(self) -> bool:
        """Ensure the tables; True when grants may move the sequence up (see the module
        docstring)."""
        await self._ready()
        if self._setval is None:
            row = await self._db.fetchrow(_CAN_SETVAL, write=False)
            self._setval = bool(row is not None and row[0])
            if not self._setval:
                log.warning(
                    "uwsx postgres: this role lacks UPDATE on the sequence %s, so lock fences "
                    "cannot move it to the clock; after a release a fence relies on the "
                    "database clock alone (GRANT UPDATE ON SEQUENCE %s to keep the counter)",
                    LOCK_FENCE_SEQUENCE,
                    LOCK_FENCE_SEQUENCE,
                )
        return self._setval

    # -- leases ------------------------------------------------------------------
    async def acquire(self, key: str, owner: str, *, ttl: float) -> Lease | None:
        k, t = self._k(key), check_ttl(ttl, optional=False)
        check_key(owner, "owner")
        assert t is not None
        setval = await self._ready_to_grant()
        row = await self._db.fetchrow(_ACQUIRE[setval], k, owner, t)
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
        setval = await self._ready_to_grant()
        row = await self._db.fetchrow(_SEIZE[setval], k, owner, t)
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
        setval = await self._ready_to_grant()
        conn = await self._session_conn()
        try:
            rows = await conn.fetch(_TRY[setval], [advisory_id(k)])
        except Indeterminate as exc:
            # The session died with the statement, so any lock it took is already gone.
            raise Unavailable(f"session lock {key!r} not taken: {exc}") from exc
        taken, fence, _ = rows[0]
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
