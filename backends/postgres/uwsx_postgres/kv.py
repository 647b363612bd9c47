"""``PostgresKV``: the KV port on one row per key (see :mod:`uwsx_postgres._kv_sql`).

Every operation is one statement, except ``map_put_bounded``, a short transaction: it locks the
map's row first, so its check of ``unless_key`` reads the latest committed state and a group
closed concurrently cannot admit a member afterwards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

from uwsx.ports.checks import check_key, check_keys, check_positive_int, check_ttl, check_value
from uwsx.ports.kv import BoundedPut, BucketResult, MapRemoval
from uwsx_postgres._checks import prefix_range, seconds, wrong_kind
from uwsx_postgres._db import Database
from uwsx_postgres._kv_sql import KvSql
from uwsx_postgres.schema import table_set

__all__ = ["PostgresKV"]

_TABLES = table_set("kv")


async def _sweep(db: Database, batch: int) -> int:
    rows = await db.fetch(KvSql.sweep, batch)
    return int(rows[0][0])


class PostgresKV:
    """Strings, counters, deadline maps and token buckets in ``uwsx_kv``."""

    def __init__(self, db: Database, prefix: str) -> None:
        self._db = db
        self._prefix = prefix

    def _k(self, key: str, what: str = "key") -> str:
        return self._prefix + check_key(key, what)

    async def _ready(self) -> None:
        await self._db.ensure(_TABLES, _sweep)

    async def _row(self, sql: str, *args: object, write: bool = True) -> tuple[object, ...] | None:
        await self._ready()
        row = await self._db.fetchrow(sql, *args, write=write)
        return None if row is None else tuple(row)

    # -- strings -----------------------------------------------------------------
    async def get(self, key: str) -> str | None:
        row = await self._row(KvSql.get, self._k(key), write=False)
        if row is None:
            return None
        if row[0] != "s":
            raise wrong_kind(key, str(row[0]), "string")
        return str(row[1])

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        full = [self._prefix + k for k in check_keys(keys)]
        if not full:
            return []
        await self._ready()
        rows = await self._db.fetch(KvSql.get_many, full, write=False)
        out: list[str | None] = []
        for key, (kind, value) in zip(keys, rows, strict=True):
            if kind is not None and kind != "s":
                raise wrong_kind(key, str(kind), "string")
            out.append(None if kind is None else str(value))
        return out

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        k, v, t = self._k(key), check_value(value), check_ttl(ttl)
        await self._ready()
        await self._db.fetch(KvSql.set, k, v, t)

    async def set_if_absent(
        self, key: str, value: str, *, ttl: float | None = None
    ) -> tuple[bool, str | None]:
        k, v, t = self._k(key), check_value(value), check_ttl(ttl)
        row = await self._row(KvSql.set_if_absent, k, v, t)
        assert row is not None
        existed, kind, current = row
        if not existed:
            return True, None
        if kind != "s":
            raise wrong_kind(key, str(kind), "string")
        return False, str(current)

    async def _compare(self, sql: str, key: str, *args: object) -> bool:
        row = await self._row(sql, self._k(key), *args)
        assert row is not None
        changed, kind = row
        if not changed and kind is not None and kind != "s":
            raise wrong_kind(key, str(kind), "string")
        return bool(changed)

    async def compare_and_set(
        self, key: str, expected: str, value: str, *, ttl: float | None = None
    ) -> bool:
        self._k(key)
        e, v, t = check_value(expected, "expected"), check_value(value), check_ttl(ttl)
        return await self._compare(KvSql.compare_and_set, key, e, v, t)

    async def compare_and_delete(self, key: str, expected: str) -> bool:
        self._k(key)
        return await self._compare(KvSql.compare_and_delete, key, check_value(expected, "expected"))

    async def compare_and_expire(self, key: str, expected: str, ttl: float) -> bool:
        self._k(key)
        e, t = check_value(expected, "expected"), check_ttl(ttl, optional=False)
        return await self._compare(KvSql.compare_and_expire, key, e, t)

    async def expire(self, key: str, ttl: float) -> bool:
        k, t = self._k(key), check_ttl(ttl, optional=False)
        return await self._row(KvSql.expire, k, t) is not None

    async def ttl(self, key: str) -> float | None:
        row = await self._row(KvSql.ttl, self._k(key), write=False)
        if row is None:
            return None
        left = row[0]
        return math.inf if left is None else max(0.0, float(left))  # type: ignore[arg-type]

    async def delete(self, *keys: str) -> int:
        full = [self._prefix + k for k in check_keys(keys)]
        if not full:
            return 0
        await self._ready()
        rows = await self._db.fetch(KvSql.delete, full)
        return sum(1 for (was_live,) in rows if was_live)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        k, t = self._k(key), check_ttl(ttl)
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"amount must be an int, got {type(amount).__name__}")
        row = await self._row(KvSql.incr, k, amount, t)
        if row is None:
            raise wrong_kind(key, "map or bucket", "counter")
        return int(str(row[0]))

    async def delete_prefix(self, prefix: str) -> int:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        full = self._prefix + prefix
        if not full:
            raise ValueError("delete_prefix needs a prefix (or a backend key_prefix)")
        low, high = prefix_range(full)
        await self._ready()
        rows = await self._db.fetch(KvSql.delete_prefix, low, high)
        return sum(1 for (was_live,) in rows if was_live)

    # -- maps ----------------------------------------------------------------------
    async def _map_read(self, sql: str, key: str, *args: object) -> object:
        row = await self._row(sql, self._k(key), *args, write=False)
        if row is None:
            return None
        if row[0] != "m":
            raise wrong_kind(key, str(row[0]), "map")
        return row[1]

    async def map_put(
        self,
        key: str,
        field: str,
        value: str,
        *,
        ttl: float | None = None,
        prefix: str | None = None,
    ) -> int:
        k, f = self._k(key), check_key(field, "field")
        v, t = check_value(value), check_ttl(ttl)
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str or None, got {type(prefix).__name__}")
        row = await self._row(KvSql.map_put, k, f, v, t, prefix)
        if row is None:
            raise wrong_kind(key, "string or bucket", "map")
        return int(str(row[0]))

    async def map_put_many(
        self, key: str, items: Mapping[str, str], *, ttl: float | None = None
    ) -> None:
        k, t = self._k(key), check_ttl(ttl)
        checked = {check_key(f, "field"): check_value(v) for f, v in items.items()}
        if not checked:
            return
        row = await self._row(KvSql.map_put_many, k, list(checked), list(checked.values()), t)
        if row is None:
            raise wrong_kind(key, "string or bucket", "map")

    async def map_get(self, key: str, field: str) -> str | None:
        check_key(field, "field")
        value = await self._map_read(KvSql.map_get, key, field)
        return None if value is None else str(value)

    async def map_items(self, key: str) -> dict[str, str]:
        raw = await self._map_read(KvSql.map_items, key)
        if raw is None:
            return {}
        return {f: str(v[0]) for f, v in json.loads(str(raw)).items()}

    async def map_count(self, key: str) -> int:
        count = await self._map_read(KvSql.map_count, key)
        return 0 if count is None else int(str(count))

    async def map_remove(self, key: str, field: str, *, prefix: str | None = None) -> MapRemoval:
        k, f = self._k(key), check_key(field, "field")
        row = await self._row(KvSql.map_remove, k, f, prefix)
        assert row is not None
        removed, remaining, kind = row
        if removed is None:
            if kind is not None and kind != "m":
                raise wrong_kind(key, str(kind), "map")
            return MapRemoval(removed=False, remaining=0)
        return MapRemoval(removed=bool(removed), remaining=int(str(remaining)))

    async def map_sweep(self, key: str) -> int:
        row = await self._row(KvSql.map_sweep, self._k(key))
        assert row is not None
        swept, kind = row
        if swept is None:
            if kind is not None and kind != "m":
                raise wrong_kind(key, str(kind), "map")
            return 0
        return int(str(swept))

    async def map_put_bounded(
        self,
        key: str,
        field: str,
        value: str,
        *,
        max_fields: int | None,
        ttl: float | None = None,
        unless_key: str | None = None,
    ) -> BoundedPut:
        k, f = self._k(key), check_key(field, "field")
        v, t = check_value(value), check_ttl(ttl)
        if max_fields is not None:
            check_positive_int(max_fields, "max_fields")
        unless = None if unless_key is None else self._k(unless_key)
        await self._ready()
        async with self._db.transaction() as tx:
            (kind, is_live), *_ = await tx.fetch(KvSql.map_lock, [k])
            if is_live and kind != "m":
                # "closed" wins over a wrong kind, as on the other backends
                if unless is not None and await tx.fetch(KvSql.get, [unless]):
                    return BoundedPut("closed", {})
                raise wrong_kind(key, str(kind), "map")
            (closed, items), *_ = await tx.fetch(
                KvSql.map_put_bounded, [k, f, v, t, max_fields, unless]
            )
        if closed:
            return BoundedPut("closed", {})
        if items is None:
            return BoundedPut("full", {})
        return BoundedPut("stored", {name: str(e[0]) for name, e in json.loads(str(items)).items()})

    # -- token buckets ---------------------------------------------------------
    async def bucket_take(
        self, key: str, *, capacity: int, interval: float, cost: int = 1, block: float = 0.0
    ) -> BucketResult:
        check_positive_int(capacity, "capacity")
        check_positive_int(cost, "cost")
        iv = seconds(interval, "interval")
        bl = seconds(block, "block", allow_zero=True)
        row = await self._row(KvSql.bucket_take, self._k(key), capacity, iv, cost, bl)
        if row is None:
            raise wrong_kind(key, "string or map", "bucket")
        outcome, points, reset_in, ban_in = row
        reset = max(0.0, float(reset_in))  # type: ignore[arg-type]
        if outcome == 0:
            return BucketResult(False, 0, max(0.0, float(ban_in or 0.0)))  # type: ignore[arg-type]
        if outcome == 1:
            return BucketResult(True, int(str(points)), reset)
        if outcome == 2:
            return BucketResult(False, 0, bl)
        return BucketResult(False, max(0, int(str(points))), reset)

    async def bucket_ban(
        self, key: str, *, duration: float, capacity: int, interval: float
    ) -> None:
        d = seconds(duration, "duration")
        check_positive_int(capacity, "capacity")
        iv = seconds(interval, "interval")
        row = await self._row(KvSql.bucket_ban, self._k(key), capacity, iv, d)
        if row is None:
            raise wrong_kind(key, "string or map", "bucket")
