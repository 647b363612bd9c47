"""``RedisQueue``: durable jobs with claim tokens and the fenced task state machine.

Honest on Redis because every key of a queue space carries the space's hash tag: the whole
space lives in one slot, so a claim (take the oldest unclaimed or lapsed jobs, set their
visibility deadline, rotate their tokens) is one Lua script that no other client can
interleave with -- Redis's equivalent of ``FOR UPDATE SKIP LOCKED``. Visibility deadlines and
fences use the server clock. The price: one space is served by one shard; use several spaces
to spread load. Durability is the server's (enable AOF for queues that must survive a crash).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Self, cast

from uwsx import _runtime
from uwsx.ports.checks import (
    check_key,
    check_non_negative_int,
    check_positive_int,
    check_space_name,
    check_ttl,
    check_value,
    colocate,
)
from uwsx.ports.queue import Job, TaskClaim, TaskRecord, TaskStatus
from uwsx_redis._context import Context, finite_seconds, ms, number, opt_text, text

__all__ = ["RedisQueue"]

_STATUSES = ("pending", "running", "committed", "failed")


def _claims(claims: Sequence[tuple[str, str]]) -> list[str]:
    """The (id, token) pairs flattened for the script, each pair once: a claim listed twice
    acts once (an extend must not add its time twice)."""
    flat: list[str] = []
    seen: set[tuple[str, str]] = set()
    for item in claims:
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError("claims must be (job_id, token) pairs")
        job_id, token = item
        check_key(job_id, "job id")
        check_key(token, "token")
        # an id this backend never issued cannot be held
        if job_id.isdigit() and (job_id, token) not in seen:
            seen.add((job_id, token))
            flat += [job_id, token]
    return flat


def _ttl_ms(value: float, what: str) -> int:
    t = check_ttl(value, what, optional=False)
    assert t is not None
    return ms(t)


def _record(reply: list[Any]) -> TaskRecord:
    return TaskRecord(
        id=text(reply[0]),
        name=text(reply[1]),
        input=text(reply[2]),
        idempotency_key=opt_text(reply[3]),
        request_id=opt_text(reply[4]),
        status=cast(TaskStatus, text(reply[5])),
        result=opt_text(reply[6]),
        error=opt_text(reply[7]),
        attempts=number(reply[8]),
        fence_expires_at=float(text(reply[9])),
        created_at=float(text(reply[10])),
        updated_at=float(text(reply[11])),
    )


def _claim(reply: list[Any]) -> TaskClaim:
    return TaskClaim(
        id=text(reply[0]),
        name=text(reply[1]),
        input=text(reply[2]),
        idempotency_key=opt_text(reply[3]),
        request_id=opt_text(reply[4]),
        fence=text(reply[5]),
        attempts=number(reply[6]),
    )


class RedisQueue:
    """The Queue port (see :mod:`uwsx.ports.queue`)."""

    def __init__(self, ctx: Context, space: str = "uwsx_queue") -> None:
        self._ctx = ctx
        self._space = space
        prefix = ctx.keys.prefix
        # The tag includes the key prefix, so tenants' spaces spread over the cluster.
        self._base = f"{ctx.keys.reserved}{space}:{colocate(prefix + space)}:"

    def space(self, name: str) -> Self:
        return type(self)(self._ctx, check_space_name(name))

    async def _jobs(self, op: str, *args: str | int) -> Any:
        return await self._ctx.eval("queue_jobs", [self._base + "jid"], [op, self._base, *args])

    async def _tasks(self, op: str, task_id: str, *args: str | int, readonly: bool = False) -> Any:
        return await self._ctx.eval(
            "queue_tasks",
            [self._base + "tseq"],
            [op, self._base, task_id, *args],
            readonly=readonly,
        )

    @staticmethod
    def _tokens(count: int) -> list[str]:
        ids = _runtime.current().ids
        return [ids.uuid() for _ in range(count)]

    # -- jobs ------------------------------------------------------------------------
    async def enqueue(self, queue: str, payload: str, *, request_id: str | None = None) -> str:
        check_key(queue, "queue")
        check_value(payload, "payload")
        self._ctx.check_size(payload, "payload")
        if request_id is not None:
            check_value(request_id, "request_id")
        return text(await self._jobs("enqueue", queue, payload, request_id or ""))

    async def claim(self, queue: str, *, limit: int, visibility: float) -> list[Job]:
        check_key(queue, "queue")
        check_positive_int(limit, "limit")
        vis = finite_seconds(visibility, "visibility")
        reply = await self._jobs("claim", queue, limit, ms(vis), *self._tokens(limit))
        return [
            Job(
                id=text(r[0]),
                queue=queue,
                payload=text(r[1]),
                request_id=opt_text(r[2]),
                attempts=number(r[3]),
                created_at=float(text(r[4])),
                token=text(r[5]),
            )
            for r in reply
        ]

    async def _act(self, op: str, claims: Sequence[tuple[str, str]], by: int = 0) -> list[str]:
        flat = _claims(claims)
        if not flat:
            return []
        return [text(i) for i in await self._jobs(op, by, *flat)]

    async def complete(self, claims: Sequence[tuple[str, str]]) -> list[str]:
        return await self._act("complete", claims)

    async def fail(self, claims: Sequence[tuple[str, str]]) -> list[str]:
        return await self._act("fail", claims)

    async def extend(self, claims: Sequence[tuple[str, str]], *, by: float) -> list[str]:
        extra = finite_seconds(by, "by")
        return await self._act("extend", claims, ms(extra))

    async def pending(self, queue: str | None = None) -> int:
        if queue is not None:
            check_key(queue, "queue")
        return number(await self._jobs("pending", queue or ""))

    async def clear(self, queue: str | None = None) -> int:
        if queue is not None:
            check_key(queue, "queue")
        return number(await self._jobs("clear", queue or ""))

    # -- tasks -----------------------------------------------------------------------
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
        self._ctx.check_size(input, "input")
        check_key(fence, "fence")
        ttl = _ttl_ms(fence_ttl, "fence_ttl")
        if status not in ("pending", "running"):
            raise ValueError(f"status must be 'pending' or 'running', got {status!r}")
        for what, value in (("idempotency_key", idempotency_key), ("request_id", request_id)):
            if value is not None:
                check_value(value, what)
        args: list[str | int] = [
            name,
            input,
            status,
            fence,
            ttl,
            idempotency_key or "",
            request_id or "",
        ]
        if number(await self._tasks("insert", task_id, *args)) == 0:
            raise ValueError(f"task {task_id!r} already exists")

    async def task_rearm(self, task_id: str, fence: str, *, attempt: int, fence_ttl: float) -> bool:
        check_key(fence, "fence")
        check_positive_int(attempt, "attempt")
        ttl = _ttl_ms(fence_ttl, "fence_ttl")
        return (
            number(await self._tasks("rearm", check_key(task_id, "task_id"), fence, attempt, ttl))
            == 1
        )

    async def task_heartbeat(self, task_id: str, fence: str, *, fence_ttl: float) -> bool:
        ttl = _ttl_ms(fence_ttl, "fence_ttl")
        check_key(task_id, "task_id")
        check_value(fence, "fence")
        return number(await self._tasks("heartbeat", task_id, fence, "", ttl)) == 1

    async def task_commit(self, task_id: str, fence: str, result: str) -> bool:
        check_value(result, "result")
        self._ctx.check_size(result, "result")
        check_key(task_id, "task_id")
        check_value(fence, "fence")
        return number(await self._tasks("commit", task_id, fence, result)) == 1

    async def task_fail(self, task_id: str, fence: str, error: str) -> bool:
        check_value(error, "error")
        check_key(task_id, "task_id")
        check_value(fence, "fence")
        return number(await self._tasks("fail", task_id, fence, error)) == 1

    async def task_read(self, task_id: str) -> TaskRecord | None:
        reply = await self._tasks("read", check_key(task_id, "task_id"), readonly=True)
        return None if reply is None else _record(reply)

    async def task_list(
        self,
        *,
        name: str | None = None,
        status: TaskStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        check_positive_int(limit, "limit")
        check_non_negative_int(offset, "offset")
        if status is not None and status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, got {status!r}")
        if name is not None:
            check_key(name, "name")
        reply = await self._tasks(
            "list", "", name or "", status or "", limit, offset, readonly=True
        )
        return [_record(r) for r in reply]

    async def task_counts(self, *, name: str | None = None) -> Mapping[str, int]:
        if name is not None:
            check_key(name, "name")
        reply = await self._tasks("counts", "", name or "", readonly=True)
        counts = {status: max(0, number(n)) for status, n in zip(_STATUSES, reply, strict=True)}
        counts["total"] = sum(counts.values())
        return counts

    async def task_expire_fence(self, task_id: str) -> str | None:
        return opt_text(await self._tasks("expire", check_key(task_id, "task_id")))

    async def _claim_rows(self, op: str, limit: int, fence_ttl: float) -> list[TaskClaim]:
        check_positive_int(limit, "limit")
        ttl = _ttl_ms(fence_ttl, "fence_ttl")
        reply = await self._tasks(op, "", limit, ttl, *self._tokens(limit))
        return [_claim(r) for r in reply]

    async def task_claim_pending(self, *, limit: int, fence_ttl: float) -> list[TaskClaim]:
        return await self._claim_rows("claim_pending", limit, fence_ttl)

    async def task_reclaim_expired(self, *, limit: int, fence_ttl: float) -> list[TaskClaim]:
        return await self._claim_rows("reclaim", limit, fence_ttl)

    async def task_cleanup(self, *, older_than: float) -> int:
        age = finite_seconds(older_than, "older_than")
        return number(await self._tasks("cleanup", "", ms(age)))
