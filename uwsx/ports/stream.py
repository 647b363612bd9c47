"""Stream port: a :class:`~uwsx.ports.SortedLog` with compact storage and idempotent append.

Specification
=============

Everything in :mod:`uwsx.ports.sorted_log` holds, with two differences:

* **Trimming may be approximate**: a stream keeps *at least* ``max_size`` newest entries and may
  keep more (Redis trims whole listpack nodes). It never keeps fewer.
* **Idempotent append.** ``append_idempotent`` looks up ``(producer_id, request_id)`` in a
  per-log dedup table first. If recorded, it returns ``Appended(seq=<original>, duplicate=True)``
  and changes nothing: a retry never advances the counter, so it can neither duplicate a message
  nor create a false gap. Otherwise it appends like ``append`` and records the request id with
  the new seq. The dedup records of one producer on one log expire ``dedup_ttl`` seconds after
  that producer's latest fresh write (``None``: never).

``append_idempotent`` is one round trip.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from uwsx.ports.sorted_log import Appended, SortedLog

__all__ = ["Stream"]


@runtime_checkable
class Stream(SortedLog, Protocol):
    """Append-only logs with idempotent append (see the module docstring)."""

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
        """Append unless ``(producer_id, request_id)`` was already appended to this log."""
        ...
