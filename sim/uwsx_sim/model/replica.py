"""A replica of the backend model: a store that re-runs the primary's writes after a lag.

The primary records every write it applies (the port call, the backend time it ran at and the
ids it drew, :class:`WriteRecord`); a :class:`Replica` re-runs them in order once each one's due
time has passed, with its clock pinned to the primary's apply time and the same ids replayed,
so its store is exactly the primary's state as of its replication offset. The persistence model
(:mod:`uwsx_sim.model.persistence`) reuses it as the primary's disk.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass
from typing import Any

from uwsx._runtime.clock import Clock
from uwsx._runtime.ids import SeededIds
from uwsx.memory import MemoryBackend, MemoryStore
from uwsx_sim.clock import Rng

__all__ = [
    "DATA_ATTRS",
    "READ_ONLY",
    "RecordingIds",
    "ReplayIds",
    "Replica",
    "ReplicaClock",
    "WriteRecord",
    "copy_state",
    "run_now",
]

#: Port methods that never change data; everything else on kv/log/stream/locks/queue replicates.
READ_ONLY = frozenset(
    {
        "get",
        "get_many",
        "ttl",
        "map_get",
        "map_items",
        "map_count",
        "read_after",
        "bounds",
        "holder",
        "pending",
        "task_read",
        "task_list",
        "task_counts",
        "session_lock_held",
        "try_session_lock",
        "release_session_lock",
    }
)


class RecordingIds:
    """The primary's ids: seeded, and every value drawn during an op is kept for replicas."""

    def __init__(self, rng: Rng) -> None:
        self._ids = SeededIds(rng)
        self.drawn: list[str] = []

    def hex(self, nbytes: int = 8) -> str:
        value = self._ids.hex(nbytes)
        self.drawn.append(value)
        return value

    def uuid(self) -> str:
        value = self._ids.uuid()
        self.drawn.append(value)
        return value


class ReplayIds:
    """A replica's ids: replays what the primary drew for the op being re-run."""

    def __init__(self, rng: Rng) -> None:
        self._fallback = SeededIds(rng)
        self.queue: deque[str] = deque()

    def hex(self, nbytes: int = 8) -> str:
        return self.queue.popleft() if self.queue else self._fallback.hex(nbytes)

    def uuid(self) -> str:
        return self.queue.popleft() if self.queue else self._fallback.uuid()


class ReplicaClock:
    """The backend clock, pinned to the primary's apply time while a replica re-runs an op."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.pinned: float | None = None

    def monotonic(self) -> float:
        return self._clock.monotonic() if self.pinned is None else self.pinned

    def wall(self) -> float:
        return self._clock.wall()

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One replicated port call."""

    prefix: str
    port: str
    space: str | None
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    at: float
    ids: tuple[str, ...]
    due: float


def run_now(coro: Any) -> Any:
    """Run a port coroutine that never suspends (every memory op but pub/sub close)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a simulated backend op suspended; it would not be atomic")


class Replica:
    """A store that re-runs the primary's writes after a lag."""

    def __init__(self, name: str, clock: Clock, rng: Rng, lag: tuple[float, float]) -> None:
        self.clock = ReplicaClock(clock)
        self.ids = ReplayIds(rng.split("ids"))
        self.store = MemoryStore(name, clock=self.clock, ids=self.ids)
        self.rng = rng
        self.lag = lag
        self.pending: deque[WriteRecord] = deque()
        self.applied = 0
        self._clients: dict[str, MemoryBackend] = {}
        self._last_due = 0.0

    def due_for(self, at: float) -> float:
        due = max(self._last_due, at + self.rng.uniform(*self.lag))
        self._last_due = due
        return due

    def catch_up(self, now: float) -> None:
        while self.pending and self.pending[0].due <= now:
            self._apply(self.pending.popleft())

    def _apply(self, rec: WriteRecord) -> None:
        client = self._clients.get(rec.prefix)
        if client is None:
            client = self._clients[rec.prefix] = MemoryBackend(self.store, key_prefix=rec.prefix)
        port: Any = getattr(client, rec.port)
        if rec.space is not None:
            port = port.space(rec.space)
        self.clock.pinned = rec.at
        self.ids.queue.extend(rec.ids)
        try:
            run_now(getattr(port, rec.method)(*rec.args, **rec.kwargs))
        except Exception:
            pass
        finally:
            self.clock.pinned = None
            self.ids.queue.clear()
        self.applied += 1


#: MemoryStore attributes that hold data (connection-scoped session locks and pub/sub
#: channels are not data: they never replicate and never persist)
DATA_ATTRS = ("keys", "logs", "fences", "leases", "queues", "_expiry_heap")


def copy_state(src: MemoryStore, dst: MemoryStore) -> None:
    """Make ``dst`` hold a deep copy of ``src``'s data (a full resync)."""
    for attr in DATA_ATTRS:
        setattr(dst, attr, copy.deepcopy(getattr(src, attr)))
    dst._serial = src._serial
    dst._heap_serial = src._heap_serial
    dst.epoch = src.epoch
