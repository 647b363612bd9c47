"""The op vocabulary of the differential fuzz: port operations as data, and the normalisation
that makes two backends' results comparable (strategies: :mod:`tests.differential.strategies`).

An :class:`Op` names a port, a method and its arguments. Arguments that only make sense
relative to what *this* backend returned earlier (a job id, a claim token, a task fence, a
session lock) are :class:`Ref` placeholders that each backend's :class:`Session` resolves from
its own history, so one sequence drives both backends.

Results are normalised before comparison (see :meth:`Session.normalize`):

* generated identifiers (job ids, claim tokens, task fences) become ordinals in the order this
  backend issued them;
* lock fences are hybrid-logical-clock values that differ between backends, so a fence becomes
  ``("fence", n)``: the n-th fence issued for that key in this example, and only if it is
  strictly greater than every fence issued for the key before (else a ``FENCE-NOT-INCREASING``
  marker that never matches);
* times (remaining TTLs, ``reset_in``, ``created_at``...) become categories: a finite positive
  remaining time, no expiry, absent;
* log epochs become the ordinal of the distinct epochs seen for that log, so "the epoch
  changed here" is compared and the opaque text is not;
* an exception becomes ``("raise", <class name>)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from uwsx.ports.kv import BoundedPut, BucketResult, MapRemoval
from uwsx.ports.locks import Holder, Lease, SessionLock
from uwsx.ports.queue import Job, TaskClaim, TaskRecord
from uwsx.ports.sorted_log import Appended, LogBounds, LogEntry

__all__ = ["ClaimRef", "FenceRef", "JobRef", "LockRef", "Op", "Ref", "Session"]

#: Longest TTL horizon used anywhere; nothing expires during an example.
LONG = 1000.0


@dataclass(frozen=True)
class Ref:
    """The ``index``-th (modulo the count) item of one kind this backend returned so far."""

    index: int


class JobRef(Ref):
    """A job id returned by ``enqueue``."""


class ClaimRef(Ref):
    """A ``(job_id, token)`` pair returned by ``claim`` (older claims hold stale tokens)."""


class FenceRef(Ref):
    """A task fence returned by ``task_claim_pending`` / ``task_reclaim_expired``."""


class LockRef(Ref):
    """A :class:`SessionLock` returned by ``try_session_lock``."""


@dataclass(frozen=True)
class Bad:
    """An argument value that must be refused. An op carries at most one, because which of
    several argument checks runs first (and so TypeError or ValueError) is not specified."""

    value: Any

    def __repr__(self) -> str:
        return repr(self.value)


def bad_count(value: Any) -> int:
    if isinstance(value, Bad):
        return 1
    if isinstance(value, list | tuple):
        return sum(bad_count(v) for v in value)
    if isinstance(value, dict):
        return sum(bad_count(k) + bad_count(v) for k, v in value.items())
    return 0


@dataclass(frozen=True)
class Op:
    """``backend.<port>[.space(space)].<method>(*args, **kwargs)``."""

    port: str
    method: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    space: str | None = None

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        where = self.port if self.space is None else f"{self.port}.space({self.space!r})"
        return f"{where}.{self.method}({', '.join(parts)})"


@dataclass
class Session:
    """One backend's history within one example: resolves refs and normalises results."""

    jobs: list[str] = field(default_factory=list)
    claims: list[tuple[str, str]] = field(default_factory=list)
    task_fences: list[str] = field(default_factory=list)
    session_locks: list[SessionLock] = field(default_factory=list)
    lock_fences: dict[str, list[int]] = field(default_factory=dict)
    epochs: dict[tuple[str | None, str], list[str]] = field(default_factory=dict)

    # -- refs ------------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, Bad):
            return value.value
        if isinstance(value, dict):
            return {self.resolve(k): self.resolve(v) for k, v in value.items()}
        if isinstance(value, JobRef):
            return self.jobs[value.index % len(self.jobs)] if self.jobs else "999999"
        if isinstance(value, ClaimRef):
            if not self.claims:
                return ("999999", "no-such-token")
            return self.claims[value.index % len(self.claims)]
        if isinstance(value, FenceRef):
            if not self.task_fences:
                return "no-such-fence"
            return self.task_fences[value.index % len(self.task_fences)]
        if isinstance(value, LockRef):
            if not self.session_locks:
                return SessionLock("S1", 1, "nobody")
            return self.session_locks[value.index % len(self.session_locks)]
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.resolve(v) for v in value)
        return value

    # -- normalisation -----------------------------------------------------------------
    def _job(self, job_id: str) -> Any:
        return ("job", self.jobs.index(job_id)) if job_id in self.jobs else ("job?", job_id)

    def _task_fence(self, fence: str) -> Any:
        if fence in self.task_fences:
            return ("claim-fence", self.task_fences.index(fence))
        return fence  # a fence the caller chose

    def _lock_fence(self, key: str, fence: int, *, issued: bool) -> Any:
        seen = self.lock_fences.setdefault(key, [])
        if not issued:
            return ("fence", seen.index(fence)) if fence in seen else ("fence?", "unknown")
        if seen and fence <= max(seen):
            return ("FENCE-NOT-INCREASING", key, fence, max(seen))
        seen.append(fence)
        return ("fence", len(seen) - 1)

    def _epoch(self, op: Op, epoch: str) -> int:
        seen = self.epochs.setdefault((op.space, str(op.args[0])), [])
        if epoch not in seen:
            seen.append(epoch)
        return seen.index(epoch)

    def normalize(self, op: Op, result: Any) -> Any:
        """A backend-independent picture of ``result`` (see the module docstring)."""
        if isinstance(result, MapRemoval):
            return ("removal", result.removed, result.remaining)
        if isinstance(result, BoundedPut):
            return ("bounded", result.status, sorted(result.items.items()))
        if isinstance(result, BucketResult):
            return ("bucket", result.allowed, result.remaining, _remaining(result.reset_in))
        if isinstance(result, Appended):
            return ("appended", result.seq, result.duplicate, result.replicas)
        if isinstance(result, LogBounds):
            return ("bounds", result.oldest, result.newest, self._epoch(op, result.epoch))
        if isinstance(result, Lease):
            fence = self._lock_fence(str(op.args[0]), result.fence, issued=True)
            return ("lease", result.key, result.owner, fence, result.ttl)
        if isinstance(result, Holder):
            fence = self._lock_fence(str(op.args[0]), result.fence, issued=False)
            return ("holder", result.owner, fence, _remaining(result.ttl))
        if isinstance(result, SessionLock):
            key = "\x00session:" + result.key
            issued = result not in self.session_locks
            if issued:
                self.session_locks.append(result)
            return ("session-lock", result.key, self._lock_fence(key, result.fence, issued=issued))
        if op.port == "queue":
            return self._queue(op, result)
        if op.method == "ttl" and isinstance(result, float):
            return _remaining(result)
        if isinstance(result, list):
            return [self.normalize(op, r) for r in result]
        if isinstance(result, LogEntry):
            return (result.seq, result.event, result.data)
        if isinstance(result, Mapping):
            return sorted(result.items())
        return result

    def _queue(self, op: Op, result: Any) -> Any:
        if op.method == "enqueue":
            self.jobs.append(result)
            return self._job(result)
        if op.method == "claim":
            for job in result:
                self.claims.append((job.id, job.token))
            return [_job_picture(self._job(j.id), j) for j in result]
        if op.method in ("complete", "fail", "extend"):
            return [self._job(i) for i in result]
        if op.method in ("task_claim_pending", "task_reclaim_expired"):
            out = []
            for claim in result:
                assert isinstance(claim, TaskClaim)
                self.task_fences.append(claim.fence)
                out.append(_task_claim_picture(claim, self._task_fence(claim.fence)))
            return out
        if op.method == "task_expire_fence" and isinstance(result, str):
            return self._task_fence(result)
        if isinstance(result, TaskRecord):
            return _task_picture(result)
        if isinstance(result, list):
            return [_task_picture(r) if isinstance(r, TaskRecord) else r for r in result]
        if isinstance(result, Mapping):
            return sorted(result.items())
        return result


def _remaining(seconds: float) -> Any:
    """A remaining time as a category: timing cannot be compared between backends."""
    if math.isinf(seconds):
        return "no-expiry"
    return "finite" if 0 < seconds <= 2 * LONG + 120 else ("odd-remaining", seconds)


def _job_picture(job_id: Any, job: Job) -> Any:
    return ("job", job_id, job.queue, job.payload, job.request_id, job.attempts)


def _task_claim_picture(claim: TaskClaim, fence: Any) -> Any:
    return (
        claim.id,
        claim.name,
        claim.input,
        claim.idempotency_key,
        claim.request_id,
        fence,
        claim.attempts,
    )


def _task_picture(row: TaskRecord) -> Any:
    times = {"fence_expires_at", "created_at", "updated_at"}
    assert is_dataclass(row)
    return tuple(getattr(row, f.name) for f in fields(row) if f.name not in times)
