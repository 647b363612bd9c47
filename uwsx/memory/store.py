"""The shared state behind ``memory://name``: one keyspace, logs, leases, queues and channels.

Everything here is synchronous: a port operation is one call with no ``await`` in between, so
it is atomic on the event loop. Time comes from the store's clock (the backend clock, which the
simulator controls); TTL deadlines are on its monotonic scale.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from uwsx import _runtime
from uwsx._runtime.clock import Clock
from uwsx._runtime.ids import Ids
from uwsx.errors import BackendError

__all__ = ["MemoryStore", "drop_store", "get_store", "open_store"]

Kind = Literal["string", "map", "bucket"]


@dataclass(slots=True)
class Entry:
    """One key. ``value`` for strings; ``fields`` (value, deadline) for maps; bucket state."""

    kind: Kind
    deadline: float | None = None
    value: str = ""
    fields: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    points: int = 0
    reset_at: float = 0.0
    banned_until: float = 0.0


ExpiryListener = Callable[[str], None]


class MemoryStore:
    """State shared by every memory backend opened on the same name."""

    def __init__(self, name: str, *, clock: Clock | None = None, ids: Ids | None = None) -> None:
        rt = _runtime.current()
        self.name = name
        self.clock: Clock = clock if clock is not None else rt.clock
        self.ids: Ids = ids if ids is not None else rt.ids
        #: Changes when the store loses acknowledged data (the simulator's failover).
        self.epoch = self.ids.hex(4)
        self.keys: dict[str, Entry] = {}
        self._expiry_heap: list[tuple[float, int, str]] = []
        self._heap_serial = 0
        self.expiry_listeners: dict[int, ExpiryListener] = {}
        self.deadline_listeners: dict[int, Callable[[float], None]] = {}
        # Other state lives in the port modules' own structures, keyed here by kind.
        self.logs: dict[tuple[str, str], object] = {}
        self.fences: dict[str, int] = {}
        self.leases: dict[str, tuple[str, int, float]] = {}
        self.session_locks: dict[str, tuple[str, int]] = {}
        self.queues: dict[str, object] = {}
        self.channels: dict[tuple[bool, str], dict[int, object]] = {}
        self._serial = 0

    def now(self) -> float:
        return self.clock.monotonic()

    def serial(self) -> int:
        """A store-wide increasing number (job ids, log incarnations...)."""
        self._serial += 1
        return self._serial

    # -- keyspace ----------------------------------------------------------------
    def live(self, key: str, kind: Kind | None = None) -> Entry | None:
        """The live entry for ``key`` (expiring it lazily), checking its kind."""
        entry = self.keys.get(key)
        if entry is None:
            return None
        if entry.deadline is not None and entry.deadline <= self.now():
            self.expire_now(key)
            return None
        if kind is not None and entry.kind != kind:
            raise BackendError(f"WRONGTYPE: key {key!r} holds a {entry.kind}, not a {kind}")
        if entry.kind == "map" and not self.live_fields(entry):
            del self.keys[key]
            return None
        return entry

    def live_fields(self, entry: Entry) -> dict[str, tuple[str, float | None]]:
        now = self.now()
        dead = [f for f, (_, d) in entry.fields.items() if d is not None and d <= now]
        for f in dead:
            del entry.fields[f]
        return entry.fields

    def create(self, key: str, kind: Kind) -> Entry:
        entry = Entry(kind)
        self.keys[key] = entry
        return entry

    def set_deadline(self, key: str, entry: Entry, ttl: float | None) -> None:
        if ttl is None:
            entry.deadline = None
            return
        entry.deadline = self.now() + ttl
        self._heap_serial += 1
        heapq.heappush(self._expiry_heap, (entry.deadline, self._heap_serial, key))
        for listener in list(self.deadline_listeners.values()):
            listener(entry.deadline)

    def expire_now(self, key: str) -> None:
        """Remove an expired key and tell expiry listeners (Redis ``expired`` events)."""
        self.keys.pop(key, None)
        for listener in list(self.expiry_listeners.values()):
            listener(key)

    def next_deadline(self) -> float | None:
        """The earliest pending key deadline (stale heap entries are dropped)."""
        heap = self._expiry_heap
        while heap:
            deadline, _, key = heap[0]
            entry = self.keys.get(key)
            if entry is not None and entry.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def expire_due(self) -> int:
        """Expire every key whose deadline has passed; returns how many."""
        now, count = self.now(), 0
        heap = self._expiry_heap
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            entry = self.keys.get(key)
            if entry is not None and entry.deadline == deadline:
                self.expire_now(key)
                count += 1
        return count

    def reset(self) -> None:
        """Drop all data (the simulator's restart without persistence) and change the epoch."""
        self.keys.clear()
        self._expiry_heap.clear()
        self.logs.clear()
        self.fences.clear()
        self.leases.clear()
        self.session_locks.clear()
        self.queues.clear()
        self.epoch = self.ids.hex(4)


_STORES: dict[str, MemoryStore] = {}


def get_store(name: str) -> MemoryStore | None:
    return _STORES.get(name)


def open_store(name: str, *, clock: Clock | None = None, ids: Ids | None = None) -> MemoryStore:
    """The store registered under ``name``, created on first use. An empty name always gives a
    new private store."""
    if not name:
        return MemoryStore("", clock=clock, ids=ids)
    store = _STORES.get(name)
    if store is None:
        store = _STORES[name] = MemoryStore(name, clock=clock, ids=ids)
    return store


def install_store(store: MemoryStore) -> None:
    """Register a store built by the caller (the simulator's, with its backend clock)."""
    _STORES[store.name] = store


def drop_store(name: str) -> None:
    """Forget a named store (its data is gone for later openers)."""
    _STORES.pop(name, None)
