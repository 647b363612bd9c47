"""``RedisKV``: the KV port on Redis / Valkey (standalone or cluster).

Strings are Redis strings, maps are hashes whose field values carry their deadline (see
``lua/prelude.lua``), token buckets are three-member sorted sets. Using one kind's operation on
another kind's key therefore fails with ``WRONGTYPE`` (a :class:`~uwsx.errors.BackendError`).
Every method is one round trip: a native command or one script.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from uwsx.ports.checks import check_key, check_keys, check_positive_int, check_ttl, check_value
from uwsx.ports.kv import BoundedPut, BucketResult, MapRemoval
from uwsx_redis._context import Context, finite_seconds, ms, number, opt_text, text
from uwsx_redis._driver_exec import Op
from uwsx_redis._scan import delete_matching

__all__ = ["RedisKV"]


def _ttl_arg(ttl: float | None) -> str | int:
    return "" if ttl is None else ms(ttl)


def _prefix_args(prefix: str | None) -> list[str]:
    if prefix is None:
        return ["0", ""]
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    return ["1", prefix]


class RedisKV:
    """Strings, counters, deadline maps and token buckets (see :mod:`uwsx.ports.kv`)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._keys = ctx.keys

    def _k(self, key: str) -> str:
        return self._keys.kv(check_key(key))

    def _value(self, value: str, what: str = "value") -> str:
        self._ctx.check_size(check_value(value, what), what)
        return value

    # -- strings ---------------------------------------------------------------------
    async def get(self, key: str) -> str | None:
        k = self._k(key)
        return opt_text(await self._ctx.command("GET", k, route=k, readonly=True))

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        full = [self._keys.kv(k) for k in check_keys(keys)]
        if not full:
            return []
        ops = [Op([("GET", k)], route=k, readonly=True) for k in full]
        replies = await self._ctx.executor.run_all(ops)
        return [opt_text(r[0]) for r in replies]

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        k, v, t = self._k(key), self._value(value), check_ttl(ttl)
        if t is None:
            await self._ctx.command("SET", k, v, route=k)
        else:
            await self._ctx.command("SET", k, v, "PX", ms(t), route=k)

    async def set_if_absent(
        self, key: str, value: str, *, ttl: float | None = None
    ) -> tuple[bool, str | None]:
        k, v, t = self._k(key), self._value(value), check_ttl(ttl)
        reply = await self._ctx.eval("kv_set_nx", [k], [v, _ttl_arg(t)])
        if number(reply[0]) == 1:
            return True, None
        return False, opt_text(reply[1] if len(reply) > 1 else None)

    async def compare_and_set(
        self, key: str, expected: str, value: str, *, ttl: float | None = None
    ) -> bool:
        k, v, t = self._k(key), self._value(value), check_ttl(ttl)
        e = check_value(expected, "expected")
        return number(await self._ctx.eval("kv_cas", [k], [e, v, _ttl_arg(t)])) == 1

    async def compare_and_delete(self, key: str, expected: str) -> bool:
        k, e = self._k(key), check_value(expected, "expected")
        return number(await self._ctx.eval("kv_cad", [k], [e])) == 1

    async def compare_and_expire(self, key: str, expected: str, ttl: float) -> bool:
        k, t = self._k(key), check_ttl(ttl, optional=False)
        e = check_value(expected, "expected")
        assert t is not None
        return number(await self._ctx.eval("kv_cae", [k], [e, ms(t)])) == 1

    async def expire(self, key: str, ttl: float) -> bool:
        k, t = self._k(key), check_ttl(ttl, optional=False)
        assert t is not None
        return number(await self._ctx.eval("kv_expire", [k], [ms(t)])) == 1

    async def ttl(self, key: str) -> float | None:
        k = self._k(key)
        left = number(await self._ctx.eval("kv_ttl", [k], readonly=True))
        if left == -2:
            return None
        if left == -1:
            return math.inf
        return left / 1000.0

    async def delete(self, *keys: str) -> int:
        full = [self._keys.kv(k) for k in check_keys(keys)]
        if not full:
            return 0
        ops = [self._ctx.script_op("kv_del", [k]) for k in full]
        replies = await self._ctx.executor.run_all(ops)
        return sum(number(r[0]) for r in replies)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        k, t = self._k(key), check_ttl(ttl)
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"amount must be an int, got {type(amount).__name__}")
        if t is None:
            return number(await self._ctx.command("INCRBY", k, amount, route=k))
        return number(await self._ctx.eval("kv_incr", [k], [amount, ms(t)]))

    async def delete_prefix(self, prefix: str) -> int:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        full = self._keys.kv(prefix)
        if not full:
            raise ValueError("delete_prefix needs a prefix (or a backend key_prefix)")
        return await delete_matching(
            self._ctx,
            full,
            keep=self._keys.is_reserved,
            delete=lambda key: self._ctx.script_op("kv_del", [key]),
        )

    # -- maps ------------------------------------------------------------------------
    def _field(self, field: str) -> str:
        return check_key(field, "field")

    async def map_put(
        self,
        key: str,
        field: str,
        value: str,
        *,
        ttl: float | None = None,
        prefix: str | None = None,
    ) -> int:
        k, f = self._k(key), self._field(field)
        v, t = self._value(value), check_ttl(ttl)
        args = [self._ctx.field_mode, f, v, _ttl_arg(t), *_prefix_args(prefix)]
        return number(await self._ctx.eval("map_put", [k], args))

    async def map_put_many(
        self, key: str, items: Mapping[str, str], *, ttl: float | None = None
    ) -> None:
        k, t = self._k(key), check_ttl(ttl)
        flat: list[str] = []
        for f, v in items.items():
            flat += [self._field(f), self._value(v)]
        if flat:
            await self._ctx.eval("map_put_many", [k], [self._ctx.field_mode, _ttl_arg(t), *flat])

    async def map_get(self, key: str, field: str) -> str | None:
        k, f = self._k(key), self._field(field)
        return opt_text(await self._ctx.eval("map_get", [k], [f]))

    async def map_items(self, key: str) -> dict[str, str]:
        flat = await self._ctx.eval("map_items", [self._k(key)], ["items"])
        return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def map_count(self, key: str) -> int:
        return number(await self._ctx.eval("map_items", [self._k(key)], ["count"]))

    async def map_remove(self, key: str, field: str, *, prefix: str | None = None) -> MapRemoval:
        k, f = self._k(key), self._field(field)
        reply = await self._ctx.eval("map_remove", [k], [f, *_prefix_args(prefix)])
        return MapRemoval(removed=number(reply[0]) == 1, remaining=number(reply[1]))

    async def map_sweep(self, key: str) -> int:
        return number(await self._ctx.eval("map_sweep", [self._k(key)]))

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
        k, f = self._k(key), self._field(field)
        v, t = self._value(value), check_ttl(ttl)
        bound = "" if max_fields is None else check_positive_int(max_fields, "max_fields")
        keys = [k] if unless_key is None else [k, self._k(unless_key)]
        self._ctx.check_colocated(keys, "map_put_bounded")
        args = [self._ctx.field_mode, f, v, _ttl_arg(t), bound]
        reply = await self._ctx.eval("map_put_bounded", keys, args)
        status = text(reply[0])
        if status != "stored":
            return BoundedPut("closed" if status == "closed" else "full", {})
        items = {text(reply[i]): text(reply[i + 1]) for i in range(1, len(reply), 2)}
        return BoundedPut("stored", items)

    # -- token buckets ---------------------------------------------------------------
    async def bucket_take(
        self, key: str, *, capacity: int, interval: float, cost: int = 1, block: float = 0.0
    ) -> BucketResult:
        k = self._k(key)
        check_positive_int(capacity, "capacity")
        check_positive_int(cost, "cost")
        window = finite_seconds(interval, "interval")
        ban = finite_seconds(block, "block", allow_zero=True)
        block_ms = 0 if ban == 0 else ms(ban)
        reply = await self._ctx.eval("bucket_take", [k], [capacity, ms(window), cost, block_ms])
        return BucketResult(
            allowed=number(reply[0]) == 1,
            remaining=number(reply[1]),
            reset_in=max(0, number(reply[2])) / 1000.0,
        )

    async def bucket_ban(
        self, key: str, *, duration: float, capacity: int, interval: float
    ) -> None:
        k = self._k(key)
        span = finite_seconds(duration, "duration")
        check_positive_int(capacity, "capacity")
        window = finite_seconds(interval, "interval")
        await self._ctx.eval("bucket_ban", [k], [ms(span), capacity, ms(window)])
