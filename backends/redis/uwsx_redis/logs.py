"""``RedisSortedLog`` (sorted set) and ``RedisStream`` (Redis Streams, ids ``<seq>-0``).

Each log keeps a counter hash ``{seq, epoch}`` that never expires next to its entries; both
(and a stream's dedup records) carry the log name as hash tag, so every operation is one script
or command on one slot. The epoch is the server time at which the counter was created plus
the ``run_id`` of the process serving the log: it changes whenever the counter had to be
recreated (deleted, or lost with the server's data) and whenever another process serves the log
(a restart or a failover, either of which may have lost acknowledged appends).
"""

from __future__ import annotations

from typing import Any, Self

from uwsx.errors import UnsupportedBackendError
from uwsx.ports.backend import Capability
from uwsx.ports.checks import (
    check_key,
    check_non_negative_int,
    check_positive_int,
    check_space_name,
    check_ttl,
    check_value,
)
from uwsx.ports.sorted_log import Appended, LogBounds, LogEntry
from uwsx_redis._context import Context, finite_seconds, ms, number, text
from uwsx_redis._driver_exec import Op
from uwsx_redis._keys import LogKeys, tag_of
from uwsx_redis._scan import scan_prefix

__all__ = ["RedisSortedLog", "RedisStream"]

_NO_EPOCH = "0"


def _check_after(after: object) -> int:
    if isinstance(after, bool) or not isinstance(after, int):
        raise TypeError(f"after must be an int, got {type(after).__name__}")
    return after


def _limit(limit: int | None) -> int | None:
    return None if limit is None else check_positive_int(limit, "limit")


def _decode_member(raw: Any) -> LogEntry:
    """``<seq>:<event byte length>:<event><data>`` (built by ``log_append.lua``)."""
    blob = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
    seq, _, rest = blob.partition(b":")
    size, _, rest = rest.partition(b":")
    n = int(size)
    return LogEntry(int(seq), text(rest[:n]), text(rest[n:]))


class RedisSortedLog:
    """The SortedLog port: a sorted set of entries (score = seq), exact trimming."""

    kind = "e"

    def __init__(self, ctx: Context, caps: frozenset[Capability], space: str = "uwsx_log") -> None:
        self._ctx = ctx
        self._caps = caps
        self._space = space

    def space(self, name: str) -> Self:
        return type(self)(self._ctx, self._caps, check_space_name(name))

    def _keys(self, log: str) -> LogKeys:
        return self._ctx.keys.log(self._space, check_key(log, "log"))

    def _wait(self, replicas: tuple[int, float] | None) -> tuple[int, float] | None:
        if replicas is None:
            return None
        if Capability.REPLICA_WAIT not in self._caps:
            raise UnsupportedBackendError(
                "replicas=(n, timeout) needs the replica_wait capability: this server has no "
                "replicas (pass replica_wait=True to the backend if replicas attach later)"
            )
        if not isinstance(replicas, tuple) or len(replicas) != 2:
            raise TypeError("replicas must be a (count, timeout seconds) tuple")
        count = check_non_negative_int(replicas[0], "replica count")
        return count, finite_seconds(replicas[1], "replica timeout")

    async def _append_op(self, op: Op, replicas: tuple[int, float] | None) -> list[Any]:
        if replicas is not None:
            # WAIT counts the writes of its own connection: same connection, same round trip.
            op.commands.append(("WAIT", replicas[0], ms(replicas[1])))
            op.read_timeout = replicas[1]
        return await self._ctx.executor.run(op)

    def _entry_args(self, event: str, data: str) -> str:
        check_value(event, "event")
        check_value(data, "data")
        tail = f"{len(event.encode('utf-8'))}:{event}{data}"
        self._ctx.check_size(tail, "entry")
        return tail

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
        tail = self._entry_args(event, data)
        check_positive_int(max_size, "max_size")
        t = check_ttl(ttl)
        wait = self._wait(replicas)
        keys = self._keys(log)
        op = self._ctx.script_op(
            "log_append", [keys.counter, keys.entries], [tail, max_size, "" if t is None else ms(t)]
        )
        replies = await self._append_op(op, wait)
        acked = None if wait is None else number(replies[1])
        return Appended(number(replies[0]), replicas=acked)

    async def read_after(self, log: str, after: int, *, limit: int | None = None) -> list[LogEntry]:
        after, n = _check_after(after), _limit(limit)
        key = self._keys(log).entries
        cmd: tuple[Any, ...] = ("ZRANGEBYSCORE", key, f"({after}", "+inf")
        if n is not None:
            cmd += ("LIMIT", 0, n)
        reply = (await self._ctx.executor.run(Op([cmd], route=key, readonly=True)))[0]
        return [_decode_member(m) for m in reply]

    async def bounds(self, log: str) -> LogBounds:
        keys = self._keys(log)
        reply = await self._ctx.eval("log_bounds", [keys.counter, keys.entries], readonly=True)
        oldest = None if reply[2] is None else int(float(text(reply[2])))
        return LogBounds(oldest, number(reply[0]), text(reply[1]) or _NO_EPOCH)

    async def delete(self, log: str) -> None:
        keys = self._keys(log)
        await self._ctx.eval("log_delete", [keys.counter, keys.entries])

    def _delete_op(self, log: str) -> Op:
        keys = self._ctx.keys.log(self._space, log)
        return self._ctx.script_op("log_delete", [keys.counter, keys.entries])

    async def delete_prefix(self, prefix: str) -> int:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        base = self._ctx.keys.log_base(self._space)
        pattern = self._ctx.keys.log_pattern(self._space, prefix)
        names: set[str] = set()
        async for page in scan_prefix(self._ctx, base, pattern=pattern):
            for key in page:
                name = tag_of(key[len(base) :]) if key.startswith(base) else None
                if name is not None and name.startswith(prefix):
                    names.add(name)
        if names:
            await self._ctx.executor.run_all([self._delete_op(n) for n in sorted(names)])
        return len(names)


class RedisStream(RedisSortedLog):
    """The Stream port: Redis Streams with ids ``<seq>-0``, approximate trimming
    (``MAXLEN ~``: at least ``max_size`` entries are kept) and idempotent append."""

    kind = "x"

    def __init__(
        self, ctx: Context, caps: frozenset[Capability], space: str = "uwsx_stream"
    ) -> None:
        super().__init__(ctx, caps, space)

    def _fields(self, event: str, data: str) -> tuple[str, str]:
        check_value(event, "event")
        check_value(data, "data")
        self._ctx.check_size(event, "event")
        self._ctx.check_size(data, "data")
        return event, data

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
        fields = self._fields(event, data)
        check_positive_int(max_size, "max_size")
        t = check_ttl(ttl)
        wait = self._wait(replicas)
        keys = self._keys(log)
        args = [*fields, max_size, "" if t is None else ms(t)]
        op = self._ctx.script_op("stream_append", [keys.counter, keys.stream], args)
        return self._appended(await self._append_op(op, wait), wait)

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
        fields = self._fields(event, data)
        check_key(producer_id, "producer_id")
        check_key(request_id, "request_id")
        check_positive_int(max_size, "max_size")
        t, dt = check_ttl(ttl), check_ttl(dedup_ttl, "dedup_ttl")
        wait = self._wait(replicas)
        k = self._keys(log)
        keys = [k.counter, k.stream, k.dedup(producer_id), k.producers]
        args = [
            *fields,
            max_size,
            "" if t is None else ms(t),
            request_id,
            producer_id,
            "" if dt is None else ms(dt),
        ]
        op = self._ctx.script_op("stream_append", keys, args)
        return self._appended(await self._append_op(op, wait), wait)

    @staticmethod
    def _appended(replies: list[Any], wait: tuple[int, float] | None) -> Appended:
        dup, seq = number(replies[0][0]), number(replies[0][1])
        acked = None if wait is None else number(replies[1])
        return Appended(seq, duplicate=dup == 1, replicas=acked)

    async def read_after(self, log: str, after: int, *, limit: int | None = None) -> list[LogEntry]:
        after, n = _check_after(after), _limit(limit)
        key = self._keys(log).stream
        start = f"{after + 1}-0" if after >= 0 else "-"
        cmd: tuple[Any, ...] = ("XRANGE", key, start, "+")
        if n is not None:
            cmd += ("COUNT", n)
        reply = (await self._ctx.executor.run(Op([cmd], route=key, readonly=True)))[0]
        out = []
        for entry_id, fields in reply:
            values = {text(fields[i]): fields[i + 1] for i in range(0, len(fields), 2)}
            seq = int(text(entry_id).partition("-")[0])
            out.append(LogEntry(seq, text(values.get("e", b"")), text(values.get("d", b""))))
        return out

    async def bounds(self, log: str) -> LogBounds:
        keys = self._keys(log)
        reply = await self._ctx.eval("stream_bounds", [keys.counter, keys.stream], readonly=True)
        oldest = None if reply[2] is None else int(text(reply[2]).partition("-")[0])
        return LogBounds(oldest, number(reply[0]), text(reply[1]) or _NO_EPOCH)

    async def delete(self, log: str) -> None:
        await self._ctx.executor.run(self._delete_op(check_key(log, "log")))

    def _delete_op(self, log: str) -> Op:
        keys = self._ctx.keys.log(self._space, log)
        return self._ctx.script_op(
            "log_delete", [keys.counter, keys.stream, keys.producers], [keys.dedup_prefix]
        )
