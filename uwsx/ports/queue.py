"""Queue port: durable jobs with claim tokens, and the task state machine with fences.

Specification
=============

Jobs
----
``enqueue`` stores a job in a named queue and returns its id (a decimal string; ids increase
numerically with enqueue order within one backend). Queues, jobs and tasks are namespaced by the
backend's ``key_prefix`` like keys are: two prefixes never see each other's rows.

``claim`` atomically takes up to ``limit`` jobs of one queue that are unclaimed or whose claim
expired, oldest id first, sets their visibility deadline to
now + ``visibility`` (backend clock), increments ``attempts`` and gives every claimed job a
fresh ``token``. Concurrent claimers never receive the same job while its claim is live (Postgres
``FOR UPDATE SKIP LOCKED`` semantics: they skip, they do not wait).

``complete``, ``fail`` and ``extend`` take ``(job_id, token)`` pairs and act **only on jobs still
held by that token**: a re-claim by another worker rotates the token, so a worker whose claim
lapsed and was taken over can no longer complete, release or extend the job. A holder whose
claim lapsed but was not re-claimed yet still holds the token and may act. (The original
library let it act on a job another worker now held.) They return the ids they acted on,
each once: a pair listed twice acts once (an ``extend`` adds ``by`` once).
``complete`` deletes; ``fail`` releases for re-claim keeping ``attempts``; ``extend`` pushes the
deadline by ``by`` seconds. ``pending`` counts jobs never claimed or released by ``fail`` (a
lapsed claim is claimable but not counted); ``clear`` deletes jobs.

Tasks
-----
A task row moves ``pending -> running -> committed | failed`` and is guarded by a **fence**
(an opaque string, rotated by the backend on every claim and by the caller on insert/rearm) that
expires at ``fence_expires_at`` (backend clock). ``task_commit``, ``task_fail`` and
``task_heartbeat`` apply only when the row is ``running`` with that fence; ``task_heartbeat``
additionally requires the fence not to have expired (a holder whose fence lapsed must not revive
it). ``task_claim_pending`` and ``task_reclaim_expired`` atomically move up to ``limit`` rows to
``running`` with a new fence, ``fence_ttl`` seconds of life and ``attempts + 1``, skipping rows
locked by concurrent claimers. Commit is therefore applied at most once per task.

**Spaces.** ``space(name)`` returns the port bound to a separate namespace (one Postgres table
per space); the default space is the port itself.

Every operation is one round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, Self, runtime_checkable

__all__ = ["Job", "Queue", "TaskClaim", "TaskRecord", "TaskStatus"]

TaskStatus = Literal["pending", "running", "committed", "failed"]


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job. ``payload`` is JSON text; ``created_at`` wall seconds (backend clock)."""

    id: str
    queue: str
    payload: str
    request_id: str | None
    attempts: int
    created_at: float
    token: str


@dataclass(frozen=True, slots=True)
class TaskClaim:
    """A task row just moved to ``running`` by a claim, with its new fence."""

    id: str
    name: str
    input: str
    idempotency_key: str | None
    request_id: str | None
    fence: str
    attempts: int


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task row as stored (the fence itself is never exposed)."""

    id: str
    name: str
    input: str
    idempotency_key: str | None
    request_id: str | None
    status: TaskStatus
    result: str | None
    error: str | None
    attempts: int
    fence_expires_at: float
    created_at: float
    updated_at: float


@runtime_checkable
class Queue(Protocol):
    """Jobs and tasks (see the module docstring)."""

    def space(self, name: str) -> Self:
        """This port bound to a separate namespace (validated identifier)."""
        ...

    # -- jobs ------------------------------------------------------------------
    async def enqueue(self, queue: str, payload: str, *, request_id: str | None = None) -> str: ...

    async def claim(self, queue: str, *, limit: int, visibility: float) -> list[Job]: ...

    async def complete(self, claims: Sequence[tuple[str, str]]) -> list[str]: ...

    async def fail(self, claims: Sequence[tuple[str, str]]) -> list[str]: ...

    async def extend(self, claims: Sequence[tuple[str, str]], *, by: float) -> list[str]: ...

    async def pending(self, queue: str | None = None) -> int: ...

    async def clear(self, queue: str | None = None) -> int: ...

    # -- tasks -----------------------------------------------------------------
    async def task_insert(
        self,
        task_id: str,
        name: str,
        input: str,
        *,
        status: Literal["pending", "running"],
        fence: str,
        fence_ttl: float,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Insert a new row (``attempts`` 1 when running, 0 when pending)."""
        ...

    async def task_rearm(self, task_id: str, fence: str, *, attempt: int, fence_ttl: float) -> bool:
        """Install a new fence and attempt number on a running row (retry)."""
        ...

    async def task_heartbeat(self, task_id: str, fence: str, *, fence_ttl: float) -> bool: ...

    async def task_commit(self, task_id: str, fence: str, result: str) -> bool: ...

    async def task_fail(self, task_id: str, fence: str, error: str) -> bool: ...

    async def task_read(self, task_id: str) -> TaskRecord | None: ...

    async def task_list(
        self,
        *,
        name: str | None = None,
        status: TaskStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        """Rows, newest first."""
        ...

    async def task_counts(self, *, name: str | None = None) -> Mapping[str, int]:
        """``pending``, ``running``, ``committed``, ``failed`` and ``total``."""
        ...

    async def task_expire_fence(self, task_id: str) -> str | None:
        """Expire a running row's fence now; returns that fence, or None if not running."""
        ...

    async def task_claim_pending(self, *, limit: int, fence_ttl: float) -> list[TaskClaim]: ...

    async def task_reclaim_expired(self, *, limit: int, fence_ttl: float) -> list[TaskClaim]: ...

    async def task_cleanup(self, *, older_than: float) -> int:
        """Delete committed/failed rows not updated for ``older_than`` seconds."""
        ...
