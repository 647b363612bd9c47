"""What a backend restart keeps: the persistence modes of the backend model.

A restart (the ``backend-restart`` nemesis) is a crash of the server *machine* followed by an
instant reboot: what the server had written but not yet synced to disk is gone, as after a
power loss. What survives depends on the scenario's ``persistence`` knob (Redis persistence,
https://redis.io/docs/latest/operate/oss_and_stack/management/persistence/):

=============== ============================================================================
mode            what the restarted primary holds
=============== ============================================================================
``none``        nothing: every key, log, lease and queue is gone (no RDB, no AOF)
``rdb``         the last snapshot: the state as of the last multiple of ``snapshot_every``
                backend seconds (``save <seconds> <changes>``; the fork is instantaneous)
``aof-everysec`` every write up to the last whole second of backend time: the AOF is fsynced
                once per second, so the (up to) 1 s of writes since that boundary is lost
``aof-always``  every write it acknowledged (fsync before each reply)
=============== ============================================================================

The disk is modelled with the replication machinery: a :class:`Disk` is a replica that nobody
reads and that receives each write at its *sync point* (the next snapshot or fsync boundary,
or at once for ``aof-always``) instead of after a network lag. Re-running the write log is the
AOF replay; the replica's state at the restart instant is the RDB file. A write therefore costs
one extra apply when persistence is on, and nothing when it is off.
"""

from __future__ import annotations

import math

from uwsx._runtime.clock import Clock
from uwsx_sim.clock import Rng
from uwsx_sim.model.replica import Replica
from uwsx_sim.scenario import parse_duration

__all__ = ["MODES", "Disk", "sync_interval"]

#: persistence mode -> what ``snapshot_every`` means for it
MODES = ("none", "rdb", "aof-everysec", "aof-always")


def sync_interval(mode: str, snapshot_every: object = "5s") -> float | None:
    """Seconds between sync points: ``None`` for ``none``, 0 for ``aof-always``.

    :raises ValueError: an unknown mode or a non-positive snapshot interval.
    """
    if mode not in MODES:
        raise ValueError(f"unknown persistence {mode!r}; known: {', '.join(MODES)}")
    if mode == "none":
        return None
    if mode == "aof-always":
        return 0.0
    if mode == "aof-everysec":
        return 1.0
    every = parse_duration(snapshot_every)
    if every <= 0:
        raise ValueError(f"snapshot_every must be positive, got {snapshot_every!r}")
    return every


class Disk(Replica):
    """The primary's persisted state: a replica that applies each write at its sync point.

    :param every: seconds between sync points (0: every write is synced as it is applied).
    """

    def __init__(self, name: str, clock: Clock, rng: Rng, every: float) -> None:
        super().__init__(name, clock, rng, (0.0, 0.0))
        self.every = every

    def due_for(self, at: float) -> float:
        """The sync point that makes a write applied at ``at`` durable."""
        if self.every <= 0:
            return at
        # a write exactly on a boundary is in that boundary's snapshot / fsync
        return math.ceil(at / self.every) * self.every
