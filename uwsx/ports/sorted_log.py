"""SortedLog port: per-name sequenced logs with an atomic append.

Specification
=============

A *log* is addressed by name (a feature uses the topic, e.g. ``replay:chat``). It holds a
**counter** and the **entries** ``(seq, event, data)`` where ``data`` is JSON text.

``append`` is one atomic step: increment the counter (the new value is the entry's ``seq``),
store the entry, trim the log to its ``max_size`` newest entries, and (with ``ttl``) push the
expiry of the *entries* to ``ttl`` seconds after this append. Concurrent appends from any number
of clients therefore get distinct, consecutive seqs 1, 2, 3, ... with no gap. An append without
``ttl`` makes the entries permanent again (the expiry always follows the latest append).

**The counter never expires.** Entries may expire (``ttl``) or be trimmed, but the counter only
resets through :meth:`delete` / :meth:`delete_prefix`. (The original library expired the
counter with the entries, so a topic's seqs restarted at 1 and a client holding seq 500 silently
skipped the new messages 1..500.)

**Epoch.** ``bounds`` returns an opaque ``epoch`` that changes whenever the backend may have lost
appends it acknowledged (counter recreated after loss, failover to a replica that lacked
writes, restart without persistence). A consumer that saw a different epoch must treat its
position as unknown.

**Durable acknowledgement.** With ``replicas=(n, timeout)`` and the ``replica_wait``
capability, the append waits (same connection, same round trip where possible) until ``n``
replicas have it or ``timeout`` seconds pass; ``Appended.replicas`` reports how many did.
Requesting it without the capability raises :class:`uwsx.errors.UnsupportedBackendError`.

**Spaces.** ``space(name)`` returns the same port bound to a separate storage namespace (a table
on Postgres); names are validated identifiers. The default space is the port itself. A space
name belongs to one port: the ``SortedLog`` and the ``Stream`` have different default spaces,
and giving both the same explicit name is unsupported (what each then sees of the other's logs
differs between backends: on Postgres it is the same table).

Costs: ``append``, ``read_after``, ``bounds`` and ``delete`` are one round trip each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Self, runtime_checkable

__all__ = ["Appended", "LogBounds", "LogEntry", "SortedLog"]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One stored entry; ``data`` is the JSON text given to ``append``."""

    seq: int
    event: str
    data: str


@dataclass(frozen=True, slots=True)
class LogBounds:
    """``oldest``: seq of the oldest stored entry (None when no entries are stored);
    ``newest``: the counter (0 for a log never appended to); ``epoch``: see module docs."""

    oldest: int | None
    newest: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Appended:
    """Result of an append: the assigned ``seq``; ``duplicate`` when an idempotent append found
    its request id already recorded (``seq`` is then the original one); ``replicas`` acked when a
    replica wait was requested."""

    seq: int
    duplicate: bool = False
    replicas: int | None = None


@runtime_checkable
class SortedLog(Protocol):
    """Sequenced logs (see the module docstring)."""

    def space(self, name: str) -> Self:
        """This port bound to a separate namespace (validated identifier)."""
        ...

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
        """Atomically assign the next seq, store, trim to ``max_size`` and refresh the TTL."""
        ...

    async def read_after(self, log: str, after: int, *, limit: int | None = None) -> list[LogEntry]:
        """Stored entries with ``seq > after`` in ascending seq order (at most ``limit``)."""
        ...

    async def bounds(self, log: str) -> LogBounds:
        """Oldest stored seq, the counter and the epoch, read together."""
        ...

    async def delete(self, log: str) -> None:
        """Remove the entries *and* the counter (the next append gets seq 1)."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every log whose name starts with ``prefix``; returns how many."""
        ...
