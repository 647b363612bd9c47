"""Planted bugs for the replay buffer and the backend model it depends on.

Each breaks one promise the replay checkers (RP-1..RP-3) guard; ``tests/sim/test_mutants.py``
proves each is found within 500 seeds of its scenario.
"""

from __future__ import annotations

from typing import Any

from uwsx.ports.sorted_log import Appended, LogEntry
from uwsx_sim.mutants import Mutant, register

__all__: list[str] = []


def _stale_counter_append(original: Any) -> Any:
    async def append(
        self: Any,
        log: str,
        event: str,
        data: str,
        *,
        max_size: int,
        ttl: float | None = None,
        replicas: Any = None,
    ) -> Appended:
        state = self._state(log, create=True)
        seen = self.__dict__.setdefault("_mutant_seen", {})
        now = self._store.now()
        cached = seen.get(log)
        # the bug: the seq comes from a counter this client read a moment ago
        base = cached[0] if cached is not None and now - cached[1] < 0.5 else state.counter
        seq = base + 1
        state.counter = max(state.counter, seq)
        state.entries.append(LogEntry(seq, event, data))
        while len(state.entries) > max_size:
            state.entries.popleft()
        seen[log] = (seq, now)
        return Appended(seq)

    return append


def _no_truncated_frame(original: Any) -> Any:
    async def replay(
        self: Any,
        conn: Any,
        topic: str,
        since_seq: int,
        platform: Any,
        req_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        class Quiet:
            def __getattr__(self, name: str) -> Any:
                return getattr(platform, name)

            def send(self, c: Any, channel: str, event: str, data: Any = None) -> int:
                if event == "truncated":
                    return 0  # the bug: the gap is never announced
                result: int = platform.send(c, channel, event, data)
                return result

        await original(self, conn, topic, since_seq, Quiet(), req_id, **kwargs)

    return replay


def _epoch_ignored(original: Any) -> Any:
    async def replay(
        self: Any,
        conn: Any,
        topic: str,
        since_seq: int,
        platform: Any,
        req_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        # the bug: the client's epoch is dropped, so positions from before a lossy failover
        # are trusted and reused seqs are skipped silently
        kwargs.pop("epoch", None)
        await original(self, conn, topic, since_seq, platform, req_id, **kwargs)

    return replay


register(
    Mutant(
        "replay-seq-not-atomic",
        "the log's seq comes from a client's stale read of the counter",
        "replay-crash",
        "RP-1",
        "uwsx.memory.logs:MemorySortedLog.append",
        _stale_counter_append,
    )
)
register(
    Mutant(
        "replay-no-truncated-frame",
        "resume never announces messages trimmed from storage",
        "replay-crash",
        "RP-2",
        "uwsx.features.replay:ReplayBuffer.replay",
        _no_truncated_frame,
    )
)
register(
    Mutant(
        "replay-ignores-epoch",
        "resume trusts a position from before the backend lost acknowledged writes",
        "replay-failover",
        "RP-2",
        "uwsx.features.replay:ReplayBuffer.replay",
        _epoch_ignored,
    )
)


def _restart_keeps_epoch(original: Any) -> Any:
    def restart_epoch(self: Any, old: str) -> str:
        return old  # the bug: a restart that lost the unsynced suffix looks like no loss

    return restart_epoch


def _promote_stalest(original: Any) -> Any:
    def promotion_candidate(self: Any) -> Any:
        # the bug: the failover promotes the replica that applied the least
        return min(self.replicas, key=lambda r: (r.applied, self.replicas.index(r)))

    return promotion_candidate


register(
    Mutant(
        "restart-keeps-epoch",
        "a backend restart that lost unsynced writes keeps the epoch (adapter blind to it)",
        "replay-restart-aof",
        "RP-2",
        "uwsx_sim.model.replication:BackendModel.restart_epoch",
        _restart_keeps_epoch,
    )
)
register(
    Mutant(
        "failover-promotes-stalest",
        "the failover promotes the least up-to-date replica, losing writes WAIT counted",
        "replay-failover-replicated",
        "RP-3",
        "uwsx_sim.model.replication:BackendModel.promotion_candidate",
        _promote_stalest,
    )
)
