"""``PostgresSortedLog`` and ``PostgresStream``: sequenced logs in a space's table set.

Appends are one statement (see :mod:`uwsx_postgres._log_sql`). An idempotent append first runs
optimistically as one statement; if another append of the same log committed between that
statement's snapshot and its lock on the counter (so its dedup lookup may be stale), it changes
nothing and is retried in a short transaction that locks the counter row before looking, which
makes the dedup check exact under any contention.
"""

from __future__ import annotations

from functools import cache
from typing import Self

from uwsx.errors import UnsupportedBackendError
from uwsx.ports.checks import check_key, check_positive_int, check_ttl, check_value
from uwsx.ports.sorted_log import Appended, LogBounds, LogEntry
from uwsx_postgres._checks import clamp_bigint, prefix_range
from uwsx_postgres._db import Database, Sweep
from uwsx_postgres._log_sql import LogSql
from uwsx_postgres.schema import DEFAULT_SPACES, TableSet, check_table_space, table_set

__all__ = ["PostgresSortedLog", "PostgresStream"]

#: Retries of an idempotent append under the counter lock (only a log being created races).
_TRIES = 50


@cache
def _sql(space: str, stream: bool) -> LogSql:
    return LogSql.for_space(space, stream=stream)


def _sweeper(sql: LogSql, stream: bool) -> Sweep:
    async def sweep(db: Database, batch: int) -> int:
        rows = await db.fetch(sql.sweep, batch)
        deleted = int(rows[0][0])
        if stream:
            rows = await db.fetch(sql.sweep_producers, batch)
            deleted += int(rows[0][0])
        return deleted

    return sweep


def _check_after(after: object) -> int:
    if isinstance(after, bool) or not isinstance(after, int):
        raise TypeError(f"after must be an int, got {type(after).__name__}")
    return clamp_bigint(after)


class PostgresSortedLog:
    """The SortedLog port; exact trimming."""

    _kind = "log"

    def __init__(self, db: Database, prefix: str, space: str | None = None) -> None:
        self._db = db
        self._prefix = prefix
        self._space = space or DEFAULT_SPACES[self._kind]
        self._stream = self._kind == "stream"
        self._tables: TableSet = table_set(self._kind, self._space)
        self._sql = _sql(self._space, self._stream)
        self._sweep = _sweeper(self._sql, self._stream)

    def space(self, name: str) -> Self:
        return type(self)(self._db, self._prefix, check_table_space(name))

    def _log(self, log: str) -> str:
        return self._prefix + check_key(log, "log")

    async def _ready(self) -> None:
        await self._db.ensure(self._tables, self._sweep)

    @staticmethod
    def _check_replicas(replicas: tuple[int, float] | None) -> None:
        if replicas is not None:
            raise UnsupportedBackendError(
                "the postgres backend does not wait for replicas (capability replica_wait is "
                "missing); use synchronous replication on the server instead"
            )

    @staticmethod
    def _check_entry(event: str, data: str, max_size: int, ttl: float | None) -> float | None:
        check_value(event, "event")
        check_value(data, "data")
        check_positive_int(max_size, "max_size")
        return check_ttl(ttl)

    async def append(
        self,
        log: str,
        event: str,
        data: str,
        *,
        max_size: int,
        ttl: float | None = None,
        replicas: tuple[int, float] | None = None,
    ) -> Appended:
        name = self._log(log)
        t = self._check_entry(event, data, max_size, ttl)
        self._check_replicas(replicas)
        await self._ready()
        row = await self._db.fetchrow(
            self._sql.append, name, event, data, clamp_bigint(max_size), t
        )
        assert row is not None
        return Appended(int(row[0]))

    async def read_after(self, log: str, after: int, *, limit: int | None = None) -> list[LogEntry]:
        name, since = self._log(log), _check_after(after)
        if limit is not None:
            check_positive_int(limit, "limit")
            limit = clamp_bigint(limit)
        await self._ready()
        rows = await self._db.fetch(self._sql.read_after, name, since, limit, write=False)
        return [LogEntry(int(seq), str(event), str(data)) for seq, event, data in rows]

    async def bounds(self, log: str) -> LogBounds:
        name = self._log(log)
        await self._ready()
        row = await self._db.fetchrow(self._sql.bounds, name, write=False)
        if row is None:
            return LogBounds(None, 0, "0")
        newest, epoch, oldest = row
        return LogBounds(None if oldest is None else int(oldest), int(newest), str(epoch))

    async def delete(self, log: str) -> None:
        name = self._log(log)
        await self._ready()
        await self._db.fetch(self._sql.delete, name)

    async def delete_prefix(self, prefix: str) -> int:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        low, high = prefix_range(self._prefix + prefix)
        await self._ready()
        rows = await self._db.fetch(self._sql.delete_prefix, low, high)
        return int(rows[0][0])


class PostgresStream(PostgresSortedLog):
    """The Stream port: a sorted log (exact trimming) plus idempotent append."""

    _kind = "stream"

    async def append_idempotent(
        self,
        log: str,
        event: str,
        data: str,
        *,
        producer_id: str,
        request_id: str,
        max_size: int,
        ttl: float | None = None,
        dedup_ttl: float | None = None,
        replicas: tuple[int, float] | None = None,
    ) -> Appended:
        name = self._log(log)
        t = self._check_entry(event, data, max_size, ttl)
        check_key(producer_id, "producer_id")
        check_key(request_id, "request_id")
        dt = check_ttl(dedup_ttl, "dedup_ttl")
        self._check_replicas(replicas)
        await self._ready()
        args = [name, event, data, clamp_bigint(max_size), t, producer_id, request_id, dt]
        row = await self._db.fetchrow(self._sql.append_idempotent, *args)
        tries = 0
        while True:
            assert row is not None
            duplicate, seq = row
            if duplicate is not None:
                return Appended(int(duplicate), duplicate=True)
            if seq is not None:
                return Appended(int(seq))
            tries += 1
            if tries > _TRIES:
                raise RuntimeError(f"idempotent append to {log!r} kept racing the log's creation")
            async with self._db.transaction() as tx:
                await tx.fetch(self._sql.lock_counter, [name])
                row = (await tx.fetch(self._sql.append_idempotent, args))[0]
