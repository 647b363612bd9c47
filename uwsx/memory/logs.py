"""``MemorySortedLog`` and ``MemoryStream``: sequenced logs in process memory."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Self

from uwsx.errors import UnsupportedBackendError
from uwsx.memory.store import MemoryStore
from uwsx.ports.checks import (
    check_key,
    check_positive_int,
    check_space_name,
    check_ttl,
    check_value,
)
from uwsx.ports.sorted_log import Appended, LogBounds, LogEntry

__all__ = ["MemorySortedLog", "MemoryStream"]

DEFAULT_SPACE = "uwsx_log"


@dataclass(slots=True)
class LogState:
    """One log: the counter survives the entries (they may expire, the counter never does)."""

    incarnation: int
    counter: int = 0
    entries: deque[LogEntry] = field(default_factory=deque)
    entries_deadline: float | None = None
    #: producer id -> (request id -> seq, deadline of the producer's records)
    dedup: dict[str, tuple[dict[str, int], float | None]] = field(default_factory=dict)


def _check_after(after: object) -> int:
    if isinstance(after, bool) or not isinstance(after, int):
        raise TypeError(f"after must be an int, got {type(after).__name__}")
    return after


class MemorySortedLog:
    """The SortedLog port; exact trimming."""

    def __init__(self, store: MemoryStore, prefix: str, space: str = DEFAULT_SPACE) -> None:
        self._store = store
        self._prefix = prefix
        self._space = space

    def space(self, name: str) -> Self:
        return type(self)(self._store, self._prefix, check_space_name(name))

    def _id(self, log: str) -> tuple[str, str]:
        return (self._space, self._prefix + check_key(log, "log"))

    def _state(self, log: str, *, create: bool) -> LogState | None:
        lid = self._id(log)
        state = self._store.logs.get(lid)
        if state is None:
            if not create:
                return None
            state = LogState(incarnation=self._store.serial())
            self._store.logs[lid] = state
        assert isinstance(state, LogState)
        if state.entries_deadline is not None and state.entries_deadline <= self._store.now():
            state.entries.clear()
            state.entries_deadline = None
        return state

    @staticmethod
    def _check_replicas(replicas: tuple[int, float] | None) -> None:
        if replicas is not None:
            raise UnsupportedBackendError(
                "the memory backend has no replicas (capability replica_wait is missing)"
            )

    def _append(
        self, state: LogState, event: str, data: str, max_size: int, ttl: float | None
    ) -> int:
        state.counter += 1
        state.entries.append(LogEntry(state.counter, event, data))
        while len(state.entries) > max_size:
            state.entries.popleft()
        state.entries_deadline = None if ttl is None else self._store.now() + ttl
        return state.counter

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
        check_value(event, "event")
        check_value(data, "data")
        check_positive_int(max_size, "max_size")
        t = check_ttl(ttl)
        self._check_replicas(replicas)
        state = self._state(log, create=True)
        assert state is not None
        return Appended(self._append(state, event, data, max_size, t))

    async def read_after(self, log: str, after: int, *, limit: int | None = None) -> list[LogEntry]:
        _check_after(after)
        if limit is not None:
            check_positive_int(limit, "limit")
        state = self._state(log, create=False)
        if state is None:
            return []
        out = [e for e in state.entries if e.seq > after]
        return out if limit is None else out[:limit]

    async def bounds(self, log: str) -> LogBounds:
        state = self._state(log, create=False)
        if state is None:
            return LogBounds(None, 0, self._store.epoch)
        oldest = state.entries[0].seq if state.entries else None
        return LogBounds(oldest, state.counter, f"{self._store.epoch}.{state.incarnation}")

    async def delete(self, log: str) -> None:
        self._store.logs.pop(self._id(log), None)

    async def delete_prefix(self, prefix: str) -> int:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        full = self._prefix + prefix
        doomed = [
            lid for lid in self._store.logs if lid[0] == self._space and lid[1].startswith(full)
        ]
        for lid in doomed:
            del self._store.logs[lid]
        return len(doomed)


class MemoryStream(MemorySortedLog):
    """The Stream port: a sorted log plus idempotent append (exact trimming is allowed)."""

    def __init__(self, store: MemoryStore, prefix: str, space: str = "uwsx_stream") -> None:
        super().__init__(store, prefix, space)

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
        check_value(event, "event")
        check_value(data, "data")
        check_key(producer_id, "producer_id")
        check_key(request_id, "request_id")
        check_positive_int(max_size, "max_size")
        t, dt = check_ttl(ttl), check_ttl(dedup_ttl, "dedup_ttl")
        self._check_replicas(replicas)
        state = self._state(log, create=True)
        assert state is not None
        now = self._store.now()
        records, deadline = state.dedup.get(producer_id, ({}, None))
        if deadline is not None and deadline <= now:
            records = {}
        seen = records.get(request_id)
        if seen is not None:
            return Appended(seen, duplicate=True)
        seq = self._append(state, event, data, max_size, t)
        records[request_id] = seq
        state.dedup[producer_id] = (records, None if dt is None else now + dt)
        return Appended(seq)
