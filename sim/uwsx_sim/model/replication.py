"""The backend model: a primary :class:`~uwsx.memory.MemoryStore`, lagging replicas, failover.

The memory backend is used unchanged. This module wraps it:

* the primary's writes are recorded as a replication log (the port call, the backend time it
  ran at and the ids it drew); each replica re-runs them in order once its seeded lag has
  passed, with its clock pinned to the primary's apply time and its ids replayed, so a replica
  is byte-for-byte the primary's state as of its replication offset;
* :meth:`BackendModel.failover` promotes the most up-to-date replica and **discards the old
  primary's unreplicated suffix** (Redis asynchronous replication; Jepsen's lost acknowledged
  writes). Clients switch to the new primary one by one after a seeded detection delay, so the
  old primary keeps accepting (doomed) writes meanwhile: the split-brain window;
* the promoted store gets a new epoch only when ``epoch_visible`` is set (the adapter reads the
  replication id); without it, lost writes are silent, which is the point of the switch.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uwsx._runtime.clock import Clock
from uwsx._runtime.ids import SeededIds
from uwsx.memory import MemoryBackend, MemoryStore
from uwsx_sim.clock import Rng

__all__ = ["READ_ONLY", "BackendModel", "RecordingIds", "ReplicaClock", "WriteRecord"]

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


class BackendModel:
    """Primary, replicas and failover (see the module docstring).

    :param on_switch: called as ``on_switch(store)`` when a new primary takes over; the world
        then moves each client over after its detection delay.
    """

    def __init__(
        self,
        name: str,
        clock: Clock,
        rng: Rng,
        *,
        replicas: int = 0,
        lag: tuple[float, float] = (0.001, 0.05),
        epoch_visible: bool = True,
    ) -> None:
        self.name = name
        self.clock = clock
        self.rng = rng
        self.lag = lag
        self.epoch_visible = epoch_visible
        self.generation = 0
        self.ids = RecordingIds(rng.split("ids"))
        self.primary = MemoryStore(name, clock=clock, ids=self.ids)
        self.replicas = [self._new_replica(i) for i in range(replicas)]
        self.failovers = 0
        #: writes acknowledged by a primary and then lost by a failover
        self.lost_writes = 0
        self.on_switch: Callable[[MemoryStore], None] | None = None

    def _new_replica(self, i: int) -> Replica:
        rep = Replica(
            f"{self.name}-r{self.generation}.{i}",
            self.clock,
            self.rng.split(f"replica{i}"),
            self.lag,
        )
        rep.store.epoch = self.primary.epoch
        return rep

    def record(
        self,
        store: MemoryStore,
        prefix: str,
        port: str,
        space: str | None,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        at: float,
    ) -> None:
        """Queue a write that ran on ``store`` for the replicas (writes on a demoted primary
        are lost: they are never replicated)."""
        drawn = tuple(self.ids.drawn)
        self.ids.drawn.clear()
        if port == "pubsub" or method in READ_ONLY:
            return
        if store is not self.primary:
            self.lost_writes += 1  # acknowledged by a demoted primary: gone
            return
        for rep in self.replicas:
            rep.catch_up(at)
            rep.pending.append(
                WriteRecord(prefix, port, space, method, args, kwargs, at, drawn, rep.due_for(at))
            )

    def begin(self) -> None:
        """Call before running an op on the primary, so its drawn ids are its own."""
        self.ids.drawn.clear()

    def failover(self) -> MemoryStore | None:
        """Promote the replica with the longest applied prefix; None without replicas."""
        if not self.replicas:
            return None
        now = self.clock.monotonic()
        for rep in self.replicas:
            rep.catch_up(now)
        best = max(self.replicas, key=lambda r: (r.applied, -self.replicas.index(r)))
        self.lost_writes += len(best.pending)
        best.pending.clear()
        old = self.primary
        new = best.store
        new.clock = self.clock
        new.ids = self.ids
        new.name = old.name
        new.epoch = self.ids.hex(4) if self.epoch_visible else old.epoch
        self.ids.drawn.clear()
        self.primary = new
        self.generation += 1
        self.failovers += 1
        self.replicas = [self._copy_replica(i) for i in range(len(self.replicas))]
        if self.on_switch is not None:
            self.on_switch(new)
        return new

    def _copy_replica(self, i: int) -> Replica:
        rep = self._new_replica(i)
        src, dst = self.primary, rep.store
        for attr in ("keys", "logs", "fences", "leases", "queues", "_expiry_heap"):
            setattr(dst, attr, copy.deepcopy(getattr(src, attr)))
        dst._serial = src._serial
        dst._heap_serial = src._heap_serial
        dst.epoch = src.epoch
        return rep

    def restart_empty(self) -> MemoryStore:
        """The primary restarts without persistence: every key is gone, the epoch changes."""
        self.primary.reset()
        for i, rep in enumerate(self.replicas):
            self.replicas[i] = self._copy_replica(i)
            rep.pending.clear()
        self.ids.drawn.clear()
        return self.primary
