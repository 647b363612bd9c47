"""``MemoryKV``: the KV port on a :class:`~uwsx.memory.store.MemoryStore`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from uwsx.errors import BackendError
from uwsx.memory.store import Entry, MemoryStore
from uwsx.ports.checks import check_key, check_keys, check_positive_int, check_ttl, check_value
from uwsx.ports.kv import BoundedPut, BucketResult, MapRemoval

__all__ = ["MemoryKV"]

_BUCKET_GRACE = 60.0
#: Counters are signed 64-bit, stored in canonical decimal (no sign on 0, no leading zeros,
#: no blanks, ASCII digits): exactly what Redis INCRBY accepts, so the model refuses the same.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_CANONICAL_INT = re.compile(r"(?:0|-?[1-9][0-9]*)\Z")


def _check_seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


class MemoryKV:
    """Strings, counters, deadline maps and token buckets in process memory."""

    def __init__(self, store: MemoryStore, prefix: str) -> None:
        self._store = store
        self._prefix = prefix

    def _k(self, key: str) -> str:
        return self._prefix + check_key(key)

    # -- strings -----------------------------------------------------------------
    async def get(self, key: str) -> str | None:
        entry = self._store.live(self._k(key), "string")
        return None if entry is None else entry.value

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        out: list[str | None] = []
        for key in check_keys(keys):
            entry = self._store.live(self._prefix + key, "string")
            out.append(None if entry is None else entry.value)
        return out

    def _write(self, key: str, value: str, ttl: float | None) -> None:
        entry = self._store.create(key, "string")
        entry.value = value
        self._store.set_deadline(key, entry, ttl)

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        k, v, t = self._k(key), check_value(value), check_ttl(ttl)
        self._store.live(k)  # expire lazily so an expiry event is not lost
        self._write(k, v, t)

    async def set_if_absent(
        self, key: str, value: str, *, ttl: float | None = None
    ) -> tuple[bool, str | None]:
        k, v, t = self._k(key), check_value(value), check_ttl(ttl)
        entry = self._store.live(k)
        if entry is not None:
            if entry.kind != "string":
                raise BackendError(f"WRONGTYPE: key {key!r} holds a {entry.kind}, not a string")
            return False, entry.value
        self._write(k, v, t)
        return True, None

    async def compare_and_set(
        self, key: str, expected: str, value: str, *, ttl: float | None = None
    ) -> bool:
        k, v, t = self._k(key), check_value(value), check_ttl(ttl)
        expected = check_value(expected, "expected")
        entry = self._store.live(k, "string")
        if entry is None or entry.value != expected:
            return False
        self._write(k, v, t)
        return True

    async def compare_and_delete(self, key: str, expected: str) -> bool:
        k, expected = self._k(key), check_value(expected, "expected")
        entry = self._store.live(k, "string")
        if entry is None or entry.value != expected:
            return False
        del self._store.keys[k]
        return True

    async def compare_and_expire(self, key: str, expected: str, ttl: float) -> bool:
        k, t = self._k(key), check_ttl(ttl, optional=False)
        expected = check_value(expected, "expected")
        entry = self._store.live(k, "string")
        if entry is None or entry.value != expected:
            return False
        self._store.set_deadline(k, entry, t)
        return True

    async def expire(self, key: str, ttl: float) -> bool:
        k, t = self._k(key), check_ttl(ttl, optional=False)
        entry = self._store.live(k)
        if entry is None:
            return False
        self._store.set_deadline(k, entry, t)
        return True

    async def ttl(self, key: str) -> float | None:
        entry = self._store.live(self._k(key))
        if entry is None:
            return None
        if entry.deadline is None:
            return math.inf
        return max(0.0, entry.deadline - self._store.now())

    async def delete(self, *keys: str) -> int:
        count = 0
        for key in check_keys(keys):
            k = self._prefix + key
            if self._store.live(k) is not None:
                del self._store.keys[k]
                count += 1
        return count

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        k, t = self._k(key), check_ttl(ttl)
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"amount must be an int, got {type(amount).__name__}")
        if not _INT64_MIN <= amount <= _INT64_MAX:
            raise BackendError(f"incr amount {amount} is outside the signed 64-bit range")
        entry = self._store.live(k, "string")
        current = 0
        if entry is not None:
            stored = entry.value
            # The length bound also keeps int() clear of its digit limit on huge values.
            if (
                len(stored) > 20
                or not _CANONICAL_INT.match(stored)
                or not _INT64_MIN <= int(stored) <= _INT64_MAX
            ):
                raise BackendError(f"value of key {key!r} is not a 64-bit integer")
            current = int(stored)
        if not _INT64_MIN <= current + amount <= _INT64_MAX:
            raise BackendError(f"incr of key {key!r} would overflow a signed 64-bit integer")
        if entry is None:
            entry = self._store.create(k, "string")
        entry.value = str(current + amount)
        if t is not None:
            self._store.set_deadline(k, entry, t)
        return current + amount

    async def delete_prefix(self, prefix: str) -> int:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        full = self._prefix + prefix
        if not full:
            raise ValueError("delete_prefix needs a prefix (or a backend key_prefix)")
        doomed = [k for k in self._store.keys if k.startswith(full)]
        count = 0
        for k in doomed:
            if self._store.live(k) is not None:
                count += 1
            self._store.keys.pop(k, None)
        return count

    # -- maps ----------------------------------------------------------------------
    def _map(self, key: str, *, create: bool) -> Entry | None:
        k = self._k(key)
        entry = self._store.live(k, "map")
        if entry is None and create:
            entry = self._store.create(k, "map")
        return entry

    def _field_deadline(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._store.now() + ttl

    @staticmethod
    def _count(fields: Mapping[str, object], prefix: str | None, exclude: str | None) -> int:
        return sum(1 for f in fields if f != exclude and (prefix is None or f.startswith(prefix)))

    async def map_put(
        self,
        key: str,
        field: str,
        value: str,
        *,
        ttl: float | None = None,
        prefix: str | None = None,
    ) -> int:
        check_key(field, "field")
        v, t = check_value(value), check_ttl(ttl)
        entry = self._map(key, create=True)
        assert entry is not None
        fields = self._store.live_fields(entry)
        others = self._count(fields, prefix, field)
        fields[field] = (v, self._field_deadline(t))
        return others

    async def map_put_many(
        self, key: str, items: Mapping[str, str], *, ttl: float | None = None
    ) -> None:
        self._k(key)  # the key is checked even when there is nothing to store
        t = check_ttl(ttl)
        checked = {check_key(f, "field"): check_value(v) for f, v in items.items()}
        if not checked:
            return
        entry = self._map(key, create=True)
        assert entry is not None
        fields = self._store.live_fields(entry)
        deadline = self._field_deadline(t)
        for f, v in checked.items():
            fields[f] = (v, deadline)

    async def map_get(self, key: str, field: str) -> str | None:
        check_key(field, "field")
        entry = self._map(key, create=False)
        if entry is None:
            return None
        item = self._store.live_fields(entry).get(field)
        return None if item is None else item[0]

    async def map_items(self, key: str) -> dict[str, str]:
        entry = self._map(key, create=False)
        if entry is None:
            return {}
        return {f: v for f, (v, _) in self._store.live_fields(entry).items()}

    async def map_count(self, key: str) -> int:
        entry = self._map(key, create=False)
        return 0 if entry is None else len(self._store.live_fields(entry))

    async def map_remove(self, key: str, field: str, *, prefix: str | None = None) -> MapRemoval:
        check_key(field, "field")
        entry = self._map(key, create=False)
        if entry is None:
            return MapRemoval(removed=False, remaining=0)
        fields = self._store.live_fields(entry)
        removed = fields.pop(field, None) is not None
        remaining = self._count(fields, prefix, None)
        if not fields:
            self._store.keys.pop(self._k(key), None)
        return MapRemoval(removed=removed, remaining=remaining)

    async def map_sweep(self, key: str) -> int:
        k = self._k(key)
        entry = self._store.keys.get(k)
        if entry is None:
            return 0
        if entry.kind != "map":
            raise BackendError(f"WRONGTYPE: key {key!r} holds a {entry.kind}, not a map")
        before = len(entry.fields)
        after = len(self._store.live_fields(entry))
        if not after:
            self._store.keys.pop(k, None)
        return before - after

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
        self._k(key)  # refused before anything is decided, as on the real servers
        check_key(field, "field")
        v, t = check_value(value), check_ttl(ttl)
        if max_fields is not None:
            check_positive_int(max_fields, "max_fields")
        if unless_key is not None and self._store.live(self._k(unless_key)) is not None:
            return BoundedPut("closed", {})
        entry = self._map(key, create=True)
        assert entry is not None
        fields = self._store.live_fields(entry)
        if max_fields is not None and field not in fields and len(fields) >= max_fields:
            return BoundedPut("full", {})
        fields[field] = (v, self._field_deadline(t))
        return BoundedPut("stored", {f: fv for f, (fv, _) in fields.items()})

    # -- token buckets -------------------------------------------------------------
    def _bucket(self, key: str, capacity: int, interval: float) -> tuple[str, Entry]:
        k = self._k(key)
        entry = self._store.live(k, "bucket")
        if entry is None:
            entry = self._store.create(k, "bucket")
            entry.points = capacity
            entry.reset_at = self._store.now() + interval
        return k, entry

    async def bucket_take(
        self, key: str, *, capacity: int, interval: float, cost: int = 1, block: float = 0.0
    ) -> BucketResult:
        check_positive_int(capacity, "capacity")
        check_positive_int(cost, "cost")
        interval = _check_seconds(interval, "interval")
        block = _check_seconds(block, "block", allow_zero=True)
        k, entry = self._bucket(key, capacity, interval)
        now = self._store.now()
        if entry.banned_until > now:
            return BucketResult(False, 0, entry.banned_until - now)
        if entry.reset_at <= now:
            entry.points = capacity
            entry.reset_at = now + interval
        if entry.points >= cost:
            entry.points -= cost
            self._store.set_deadline(k, entry, interval + block + _BUCKET_GRACE)
            return BucketResult(True, entry.points, entry.reset_at - now)
        if block > 0:
            entry.banned_until = now + block
            self._store.set_deadline(k, entry, block + _BUCKET_GRACE)
            return BucketResult(False, 0, block)
        self._store.set_deadline(k, entry, interval + _BUCKET_GRACE)
        return BucketResult(False, max(0, entry.points), entry.reset_at - now)

    async def bucket_ban(
        self, key: str, *, duration: float, capacity: int, interval: float
    ) -> None:
        duration = _check_seconds(duration, "duration")
        check_positive_int(capacity, "capacity")
        interval = _check_seconds(interval, "interval")
        k, entry = self._bucket(key, capacity, interval)
        entry.banned_until = self._store.now() + duration
        self._store.set_deadline(k, entry, duration + _BUCKET_GRACE)
