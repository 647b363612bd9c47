"""The backend model: a primary :class:`~uwsx.memory.MemoryStore`, lagging replicas, failover,
restarts with persistence, and ``WAIT``.

The memory backend is used unchanged. This module wraps it:

* the primary's writes are recorded as a replication log (the port call, the backend time it
  ran at and the ids it drew); each replica re-runs them in order once its seeded lag has
  passed, with its clock pinned to the primary's apply time and its ids replayed, so a replica
  is byte-for-byte the primary's state as of its replication offset
  (:mod:`uwsx_sim.model.replica`);
* :meth:`BackendModel.failover` promotes the most up-to-date replica (the longest applied
  prefix, as Redis Sentinel and Cluster pick the highest replication offset) and **discards the
  old primary's unreplicated suffix** (Redis asynchronous replication; Jepsen's lost
  acknowledged writes). Clients switch to the new primary one by one after a seeded detection
  delay, so the old primary keeps accepting (doomed) writes meanwhile: the split-brain window;
* the promoted store gets a new epoch only when ``epoch_visible`` is set (the adapter reads the
  replication id); without it, lost writes are silent, which is the point of the switch;
* :meth:`BackendModel.restart` restarts the primary with what its persistence mode kept
  (:mod:`uwsx_sim.model.persistence`); the replicas then resynchronise from it;
* :meth:`BackendModel.ack_times` and :meth:`BackendModel.acked_by` are ``WAIT``: when each
  replica acknowledges a client's writes, and how many had by a given instant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uwsx._runtime.clock import Clock
from uwsx.memory import MemoryStore
from uwsx_sim.clock import Rng
from uwsx_sim.model.persistence import Disk, sync_interval
from uwsx_sim.model.replica import (
    READ_ONLY,
    RecordingIds,
    Replica,
    ReplicaClock,
    WriteRecord,
    copy_state,
    run_now,
)

__all__ = [
    "READ_ONLY",
    "BackendModel",
    "RecordingIds",
    "ReplicaClock",
    "WriteRecord",
    "run_now",
]


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
        persistence: str = "none",
        snapshot_every: object = "5s",
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
        self.persistence = persistence
        self._sync_every = sync_interval(persistence, snapshot_every)
        self.restarts = 0
        #: backend time until which the primary is down after a restart: connections to it
        #: are refused (a failover ends it: the promoted replica runs elsewhere)
        self.down_until = 0.0
        #: generation -> backend time it ended (a failover or a restart)
        self.ended: dict[int, float] = {}
        self.disk = self._new_disk()

    def _new_disk(self) -> Disk | None:
        if self._sync_every is None:
            return None
        disk = Disk(
            f"{self.name}-disk{self.generation}",
            self.clock,
            self.rng.split("disk"),
            self._sync_every,
        )
        copy_state(self.primary, disk.store)
        return disk

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
        targets = self.replicas if self.disk is None else [*self.replicas, self.disk]
        for rep in targets:
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
        best = self.promotion_candidate()
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
        self._next_generation(now)
        self.failovers += 1
        self.down_until = 0.0
        self.replicas = [self._copy_replica(i) for i in range(len(self.replicas))]
        if self.disk is not None:
            self.disk = self._new_disk()  # the promoted replica's own files
        if self.on_switch is not None:
            self.on_switch(new)
        return new

    def promotion_candidate(self) -> Replica:
        """The replica with the longest applied prefix (the first one on a tie): it holds
        every write any replica acknowledged, so a write ``WAIT`` counted survives."""
        return max(self.replicas, key=lambda r: (r.applied, -self.replicas.index(r)))

    def _copy_replica(self, i: int) -> Replica:
        rep = self._new_replica(i)
        copy_state(self.primary, rep.store)
        return rep

    def _next_generation(self, now: float) -> None:
        """Acknowledged writes may have been lost: a new generation (ground truth for the
        checkers) begins, and replica acknowledgements of the old one stop counting."""
        self.ended[self.generation] = now
        self.generation += 1

    def restart_epoch(self, old: str) -> str:
        """The epoch after a restart that kept data: new when the adapter reads the server's
        replication id (a crashed server comes back with a new one), else the old one."""
        return self.ids.hex(4) if self.epoch_visible else old

    def down(self) -> bool:
        """True while a restarted primary is still booting (connections are refused)."""
        return self.clock.monotonic() < self.down_until

    def restart(self, downtime: float = 0.0) -> MemoryStore:
        """The primary crashes and restarts with what its persistence mode kept, refusing
        connections for ``downtime`` seconds; the replicas resynchronise from it. Returns the
        new primary (the same store for ``none``)."""
        self.restarts += 1
        self.down_until = self.clock.monotonic() + downtime
        if self.disk is None:
            return self.restart_empty()
        now = self.clock.monotonic()
        disk = self.disk
        disk.catch_up(now)
        self.lost_writes += len(disk.pending)  # written, never synced
        disk.pending.clear()
        old, new = self.primary, disk.store
        new.clock = self.clock
        new.ids = self.ids
        new.name = old.name
        # data-derived epochs (a log's incarnation) never repeat: a counter lost with the
        # unsynced suffix is recreated with a new one, as the server clock moves on
        new._serial = max(new._serial, old._serial)
        new.epoch = self.restart_epoch(old.epoch)
        self.ids.drawn.clear()
        self.primary = new
        self._next_generation(now)
        self.replicas = [self._copy_replica(i) for i in range(len(self.replicas))]
        self.disk = self._new_disk()
        return new

    def restart_empty(self) -> MemoryStore:
        """The primary restarts without persistence: every key is gone, the epoch changes."""
        self.primary.reset()
        self._next_generation(self.clock.monotonic())
        for i, rep in enumerate(self.replicas):
            self.replicas[i] = self._copy_replica(i)
            rep.pending.clear()
        self.ids.drawn.clear()
        return self.primary

    # -- WAIT ----------------------------------------------------------------------
    def ack_times(self, store: MemoryStore) -> tuple[int, list[float]]:
        """``(generation, times)``: when each replica has acknowledged every write applied on
        ``store`` so far (call right after the client's write). A store that is no longer the
        primary has no replicas: nothing it applies is ever acknowledged."""
        if store is not self.primary:
            return self.generation, []
        now = self.clock.monotonic()
        return self.generation, [r.pending[-1].due if r.pending else now for r in self.replicas]

    def acked_by(self, generation: int, times: list[float], at: float) -> int:
        """How many replicas had acknowledged by ``at``: acknowledgements after the generation
        ended (failover, restart) do not count, that replication stream is gone."""
        limit = min(at, self.ended.get(generation, at))
        return sum(1 for t in times if t <= limit)
