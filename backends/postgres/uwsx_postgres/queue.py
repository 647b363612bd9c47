"""``PostgresQueue``: durable jobs and the fenced task state machine (see
:mod:`uwsx_postgres._queue_sql`).

Job ids are the decimal text of a ``bigint`` identity, so they increase with enqueue order.
Every operation is one statement; jobs and tasks of a space are created on first use of each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Literal, Self, cast

from uwsx.ports.checks import check_key, check_positive_int, check_ttl, check_value
from uwsx.ports.queue import Job, TaskClaim, TaskRecord, TaskStatus
from uwsx_postgres._checks import BIGINT_MAX, clamp_bigint, seconds
from uwsx_postgres._db import Database
from uwsx_postgres._driver import Row, UniqueViolation
from uwsx_postgres._queue_sql import QueueSql
from uwsx_postgres.schema import DEFAULT_SPACES, check_table_space, table_set

__all__ = ["PostgresQueue"]

_STATUSES = ("pending", "running", "committed", "failed")


@cache
def _sql(space: str) -> QueueSql:
    return QueueSql.for_space(space)


def _claims(claims: Sequence[tuple[str, str]]) -> tuple[list[int], list[str]]:
    ids: list[int] = []
    tokens: list[str] = []
    for item in claims:
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError("claims must be (job_id, token) pairs")
        job_id, token = item
        check_key(job_id, "job id")
        check_key(token, "token")
        try:
            number = int(job_id)
        except ValueError:
            continue  # an id this backend never issued cannot be held
        if 0 < number <= BIGINT_MAX:
            ids.append(number)
            tokens.append(token)
    return ids, tokens


def _record(row: Row) -> TaskRecord:
    (tid, name, inp, key, req, status, result, error, attempts, fexp, created, updated) = row
    return TaskRecord(
        str(tid),
        str(name),
        str(inp),
        key,
        req,
        cast(TaskStatus, status),
        result,
        error,
        int(attempts),
        float(fexp),
        float(created),
        float(updated),
    )


def _claimed(rows: list[Row]) -> list[TaskClaim]:
    ordered = sorted(rows, key=lambda r: r[-1])
    return [
        TaskClaim(str(i), str(n), str(inp), k, rq, str(f), int(a))
        for i, n, inp, k, rq, f, a, _ in ordered
    ]


class PostgresQueue:
    """The Queue port over one space's tables."""

    def __init__(self, db: Database, prefix: str, space: str | None = None) -> None:
        self._db = db
        self._ns = prefix
        self._space = space or DEFAULT_SPACES["queue"]
        self._jobs = table_set("queue", self._space)
        self._tasks = table_set("tasks", self._space)
        self._sql = _sql(self._space)

    def space(self, name: str) -> Self:
        return type(self)(self._db, self._ns, check_table_space(name))

    async def _job(self, sql: str, *args: object, write: bool = True) -> list[Row]:
        await self._db.ensure(self._jobs)
        return await self._db.fetch(sql, self._ns, *args, write=write)

    async def _task(self, sql: str, *args: object, write: bool = True) -> list[Row]:
        await self._db.ensure(self._tasks)
        return await self._db.fetch(sql, self._ns, *args, write=write)

    # -- jobs ----------------------------------------------------------------------
    async def enqueue(self, queue: str, payload: str, *, request_id: str | None = None) -> str:
        check_key(queue, "queue")
        check_value(payload, "payload")
        if request_id is not None:
            check_value(request_id, "request_id")
        rows = await self._job(self._sql.enqueue, queue, payload, request_id or None)
        return str(rows[0][0])

    async def claim(self, queue: str, *, limit: int, visibility: float) -> list[Job]:
        check_key(queue, "queue")
        check_positive_int(limit, "limit")
        vis = seconds(visibility, "visibility")
        rows = await self._job(self._sql.claim, queue, min(limit, 2**31 - 1), vis)
        return [
            Job(str(i), str(q), str(p), r, int(a), float(c), str(t))
            for i, q, p, r, a, c, t in sorted(rows, key=lambda r: int(r[0]))
        ]

    async def _held(self, sql: str, claims: Sequence[tuple[str, str]], *extra: object) -> list[str]:
        ids, tokens = _claims(claims)
        if not ids:
            return []
        rows = await self._job(sql, ids, tokens, *extra)
        return [str(i) for i in sorted({int(r[0]) for r in rows})]

    async def complete(self, claims: Sequence[tuple[str, str]]) -> list[str]:
        return await self._held(self._sql.complete, claims)

    async def fail(self, claims: Sequence[tuple[str, str]]) -> list[str]:
        return await self._held(self._sql.fail, claims)

    async def extend(self, claims: Sequence[tuple[str, str]], *, by: float) -> list[str]:
        extra = seconds(by, "by")
        return await self._held(self._sql.extend, claims, extra)

    async def pending(self, queue: str | None = None) -> int:
        if queue is not None:
            check_key(queue, "queue")
        rows = await self._job(self._sql.pending, queue, write=False)
        return int(rows[0][0])

    async def clear(self, queue: str | None = None) -> int:
        if queue is not None:
            check_key(queue, "queue")
        rows = await self._job(self._sql.clear, queue)
        return int(rows[0][0])

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
        check_key(task_id, "task_id")
        check_key(name, "name")
        check_value(input, "input")
        check_key(fence, "fence")
        ttl = check_ttl(fence_ttl, "fence_ttl", optional=False)
        if status not in ("pending", "running"):
            raise ValueError(f"status must be 'pending' or 'running', got {status!r}")
        try:
            await self._task(
                self._sql.task_insert,
                task_id,
                name,
                input,
                idempotency_key,
                request_id,
                status == "running",
                fence,
                ttl,
            )
        except UniqueViolation:
            raise ValueError(f"task {task_id!r} already exists") from None

    async def task_rearm(self, task_id: str, fence: str, *, attempt: int, fence_ttl: float) -> bool:
        check_key(task_id, "task_id")
        check_key(fence, "fence")
        check_positive_int(attempt, "attempt")
        ttl = check_ttl(fence_ttl, "fence_ttl", optional=False)
        return bool(
            await self._task(self._sql.task_rearm, task_id, fence, min(attempt, 2**31 - 1), ttl)
        )

    async def task_heartbeat(self, task_id: str, fence: str, *, fence_ttl: float) -> bool:
        check_key(task_id, "task_id")
        check_value(fence, "fence")
        ttl = check_ttl(fence_ttl, "fence_ttl", optional=False)
        return bool(await self._task(self._sql.task_heartbeat, task_id, fence, ttl))

    async def task_commit(self, task_id: str, fence: str, result: str) -> bool:
        check_key(task_id, "task_id")
        check_value(fence, "fence")
        check_value(result, "result")
        return bool(await self._task(self._sql.task_commit, task_id, fence, result))

    async def task_fail(self, task_id: str, fence: str, error: str) -> bool:
        check_key(task_id, "task_id")
        check_value(fence, "fence")
        check_value(error, "error")
        return bool(await self._task(self._sql.task_fail, task_id, fence, error))

    async def task_read(self, task_id: str) -> TaskRecord | None:
        rows = await self._task(self._sql.task_read, check_key(task_id, "task_id"), write=False)
        return _record(rows[0]) if rows else None

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
        if status is not None and status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, got {status!r}")
        rows = await self._task(
            self._sql.task_list,
            name,
            status,
            clamp_bigint(limit),
            clamp_bigint(offset),
            write=False,
        )
        return [_record(r) for r in rows]

    async def task_counts(self, *, name: str | None = None) -> Mapping[str, int]:
        rows = await self._task(self._sql.task_counts, name, write=False)
        counts = dict.fromkeys(_STATUSES, 0)
        for status, count in rows:
            if status in counts:
                counts[str(status)] += int(count)
        counts["total"] = sum(int(c) for _, c in rows)
        return counts

    async def task_expire_fence(self, task_id: str) -> str | None:
        rows = await self._task(self._sql.task_expire_fence, check_key(task_id, "task_id"))
        return str(rows[0][0]) if rows else None

    async def task_claim_pending(self, *, limit: int, fence_ttl: float) -> list[TaskClaim]:
        check_positive_int(limit, "limit")
        ttl = check_ttl(fence_ttl, "fence_ttl", optional=False)
        return _claimed(await self._task(self._sql.task_claim_pending, min(limit, 2**31 - 1), ttl))

    async def task_reclaim_expired(self, *, limit: int, fence_ttl: float) -> list[TaskClaim]:
        check_positive_int(limit, "limit")
        ttl = check_ttl(fence_ttl, "fence_ttl", optional=False)
        return _claimed(
            await self._task(self._sql.task_reclaim_expired, min(limit, 2**31 - 1), ttl)
        )

    async def task_cleanup(self, *, older_than: float) -> int:
        age = seconds(older_than, "older_than")
        rows = await self._task(self._sql.task_cleanup, age)
        return int(rows[0][0])
