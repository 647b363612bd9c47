"""``MemoryQueue``: jobs with claim tokens and the fenced task state machine."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Self

from uwsx.memory.store import MemoryStore
from uwsx.ports.checks import (
    check_key,
    check_positive_int,
    check_space_name,
    check_ttl,
    check_value,
)
from uwsx.ports.queue import Job, TaskClaim, TaskRecord, TaskStatus

__all__ = ["MemoryQueue"]


@dataclass(slots=True)
class _JobRow:
    id: int
    queue: str
    payload: str
    request_id: str | None
    created_at: float
    attempts: int = 0
    claimed_until: float | None = None
    token: str | None = None


@dataclass(slots=True)
class _Space:
    jobs: dict[int, _JobRow] = field(default_factory=dict)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    fences: dict[str, str] = field(default_factory=dict)
    #: fence deadlines on the store's monotonic clock
    deadlines: dict[str, float] = field(default_factory=dict)
    next_job: int = 0


def _check_claims(claims: Sequence[tuple[str, str]]) -> list[tuple[int, str]]:
    out = []
    for item in claims:
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError("claims must be (job_id, token) pairs")
        job_id, token = item
        check_key(job_id, "job id")
        check_key(token, "token")
        try:
            out.append((int(job_id), token))
        except ValueError:
            continue  # an id this backend never issued cannot be held
    return out


def _positive_seconds(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    if value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


class MemoryQueue:
    """The Queue port in process memory (one space per table name)."""

    def __init__(self, store: MemoryStore, prefix: str, space: str = "uwsx_queue") -> None:
        self._store = store
        self._prefix = prefix
        self._space_name = space

    def space(self, name: str) -> Self:
        return type(self)(self._store, self._prefix, check_space_name(name))

    @property
    def _s(self) -> _Space:
        key = self._prefix + "\x00" + self._space_name
        space = self._store.queues.get(key)
        if space is None:
            space = self._store.queues[key] = _Space()
        assert isinstance(space, _Space)
        return space

    # -- jobs ----------------------------------------------------------------------
    async def enqueue(self, queue: str, payload: str, *, request_id: str | None = None) -> str:
        check_key(queue, "queue")
        check_value(payload, "payload")
        if request_id is not None:
            check_value(request_id, "request_id")
        s = self._s
        s.next_job += 1
        s.jobs[s.next_job] = _JobRow(
            s.next_job, queue, payload, request_id or None, self._store.clock.wall()
        )
        return str(s.next_job)

    async def claim(self, queue: str, *, limit: int, visibility: float) -> list[Job]:
        check_key(queue, "queue")
        check_positive_int(limit, "limit")
        vis = _positive_seconds(visibility, "visibility")
        now, out = self._store.now(), list[Job]()
        for row in self._s.jobs.values():
            if len(out) >= limit:
                break
            if row.queue != queue or (row.claimed_until is not None and row.claimed_until >= now):
                continue
            row.attempts += 1
            row.claimed_until = now + vis
            row.token = self._store.ids.hex(8)
            out.append(
                Job(
                    str(row.id),
                    row.queue,
                    row.payload,
                    row.request_id,
                    row.attempts,
                    row.created_at,
                    row.token,
                )
            )
        return out

    def _held(self, claims: Sequence[tuple[str, str]]) -> list[_JobRow]:
        jobs = self._s.jobs
        out: dict[int, _JobRow] = {}  # a claim listed twice acts once
        for job_id, token in _check_claims(claims):
            row = jobs.get(job_id)
            if row is not None and row.token == token and row.claimed_until is not None:
                out[id(row)] = row
        return list(out.values())

    async def complete(self, claims: Sequence[tuple[str, str]]) -> list[str]:
        rows = self._held(claims)
        for row in rows:
            del self._s.jobs[row.id]
        return [str(r.id) for r in rows]

    async def fail(self, claims: Sequence[tuple[str, str]]) -> list[str]:
        rows = self._held(claims)
        for row in rows:
            row.claimed_until = None
            row.token = None
        return [str(r.id) for r in rows]

    async def extend(self, claims: Sequence[tuple[str, str]], *, by: float) -> list[str]:
        extra = _positive_seconds(by, "by")
        rows = self._held(claims)
        for row in rows:
            assert row.claimed_until is not None
            row.claimed_until += extra
        return [str(r.id) for r in rows]

    async def pending(self, queue: str | None = None) -> int:
        return sum(
            1
            for r in self._s.jobs.values()
            if r.claimed_until is None and (queue is None or r.queue == queue)
        )

    async def clear(self, queue: str | None = None) -> int:
        jobs = self._s.jobs
        doomed = [i for i, r in jobs.items() if queue is None or r.queue == queue]
        for i in doomed:
            del jobs[i]
        return len(doomed)

    # -- tasks ---------------------------------------------------------------------
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
        check_key(task_id, "task_id")
        check_key(name, "name")
        check_value(input, "input")
        check_key(fence, "fence")
        ttl = check_ttl(fence_ttl, "fence_ttl", optional=False)
        assert ttl is not None
        if status not in ("pending", "running"):
            raise ValueError(f"status must be 'pending' or 'running', got {status!r}")
        s = self._s
        if task_id in s.tasks:
            raise ValueError(f"task {task_id!r} already exists")
        now, wall = self._store.now(), self._store.clock.wall()
        s.tasks[task_id] = TaskRecord(
            task_id,
            name,
            input,
            idempotency_key,
            request_id,
            status,
            None,
            None,
            1 if status == "running" else 0,
            wall + (ttl if status == "running" else 0.0),
            wall,
            wall,
        )
        s.fences[task_id] = fence
        self._deadlines[task_id] = now + ttl if status == "running" else now

    @property
    def _deadlines(self) -> dict[str, float]:
        return self._s.deadlines

    def _running(self, task_id: str, fence: str) -> TaskRecord | None:
        row = self._s.tasks.get(task_id)
        if row is None or row.status != "running" or self._s.fences.get(task_id) != fence:
            return None
        return row

    def _touch(self, row: TaskRecord, **changes: object) -> None:
        self._s.tasks[row.id] = replace(row, updated_at=self._store.clock.wall(), **changes)  # type: ignore[arg-type]

    async def task_rearm(self, task_id: str, fence: str, *, attempt: int, fence_ttl: float) -> bool:
        check_key(fence, "fence")
        check_positive_int(attempt, "attempt")
        ttl = check_ttl(fence_ttl, "fence_ttl", optional=False)
        assert ttl is not None
        row = self._s.tasks.get(task_id)
        if row is None or row.status != "running":
            return False
        self._s.fences[task_id] = fence
        self._deadlines[task_id] = self._store.now() + ttl
        self._touch(row, attempts=attempt, fence_expires_at=self._store.clock.wall() + ttl)
        return True

    async def task_heartbeat(self, task_id: str, fence: str, *, fence_ttl: float) -> bool:
        ttl = check_ttl(fence_ttl, "fence_ttl", optional=False)
        assert ttl is not None
        row = self._running(task_id, fence)
        if row is None or self._deadlines.get(task_id, 0.0) < self._store.now():
            return False
        self._deadlines[task_id] = self._store.now() + ttl
        self._touch(row, fence_expires_at=self._store.clock.wall() + ttl)
        return True

    async def task_commit(self, task_id: str, fence: str, result: str) -> bool:
        check_value(result, "result")
        row = self._running(task_id, fence)
        if row is None:
            return False
        self._touch(row, status="committed", result=result)
        return True

    async def task_fail(self, task_id: str, fence: str, error: str) -> bool:
        check_value(error, "error")
        row = self._running(task_id, fence)
        if row is None:
            return False
        self._touch(row, status="failed", error=error)
        return True

    async def task_read(self, task_id: str) -> TaskRecord | None:
        return self._s.tasks.get(check_key(task_id, "task_id"))

    async def task_list(
        self,
        *,
        name: str | None = None,
        status: TaskStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        check_positive_int(limit, "limit")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
        rows = [
            r
            for r in reversed(list(self._s.tasks.values()))
            if (name is None or r.name == name) and (status is None or r.status == status)
        ]
        return rows[offset : offset + limit]

    async def task_counts(self, *, name: str | None = None) -> Mapping[str, int]:
        counts = {"pending": 0, "running": 0, "committed": 0, "failed": 0, "total": 0}
        for r in self._s.tasks.values():
            if name is None or r.name == name:
                counts[r.status] += 1
                counts["total"] += 1
        return counts

    async def task_expire_fence(self, task_id: str) -> str | None:
        row = self._s.tasks.get(task_id)
        if row is None or row.status != "running":
            return None
        self._deadlines[task_id] = self._store.now() - 1.0
        self._touch(row, fence_expires_at=self._store.clock.wall() - 1.0)
        return self._s.fences[task_id]

    def _claim(self, rows: list[TaskRecord], ttl: float) -> list[TaskClaim]:
        out = []
        now, wall = self._store.now(), self._store.clock.wall()
        for row in rows:
            fence = self._store.ids.uuid()
            self._s.fences[row.id] = fence
            self._deadlines[row.id] = now + ttl
            self._touch(
                row, status="running", attempts=row.attempts + 1, fence_expires_at=wall + ttl
            )
            out.append(
                TaskClaim(
                    row.id,
                    row.name,
                    row.input,
                    row.idempotency_key,
                    row.request_id,
                    fence,
                    row.attempts + 1,
                )
            )
        return out

    async def task_claim_pending(self, *, limit: int, fence_ttl: float) -> list[TaskClaim]:
        check_positive_int(limit, "limit")
        ttl = check_ttl(fence_ttl, "fence_ttl", optional=False)
        assert ttl is not None
        rows = [r for r in self._s.tasks.values() if r.status == "pending"]
        rows.sort(key=lambda r: r.created_at)
        return self._claim(rows[:limit], ttl)

    async def task_reclaim_expired(self, *, limit: int, fence_ttl: float) -> list[TaskClaim]:
        check_positive_int(limit, "limit")
        ttl = check_ttl(fence_ttl, "fence_ttl", optional=False)
        assert ttl is not None
        now, deadlines = self._store.now(), self._deadlines
        rows = [
            r
            for r in self._s.tasks.values()
            if r.status == "running" and deadlines.get(r.id, 0.0) < now
        ]
        rows.sort(key=lambda r: deadlines.get(r.id, 0.0))
        return self._claim(rows[:limit], ttl)

    async def task_cleanup(self, *, older_than: float) -> int:
        age = _positive_seconds(older_than, "older_than")
        cutoff = self._store.clock.wall() - age
        tasks = self._s.tasks
        doomed = [
            i
            for i, r in tasks.items()
            if r.status in ("committed", "failed") and r.updated_at < cutoff
        ]
        for i in doomed:
            del tasks[i]
            self._s.fences.pop(i, None)
            self._deadlines.pop(i, None)
        return len(doomed)
