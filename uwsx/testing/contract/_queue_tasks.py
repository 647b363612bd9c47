"""Queue contract, part 2: the fenced task state machine.

``task_claim_pending`` and ``task_reclaim_expired`` see every row of a space, so the tests that
use them first drain the class's space (rows a crashed earlier run left behind), and tag their
own rows with a unique task name. Tests of one class must not run concurrently against one
server unless the backend also namespaces queue rows by ``key_prefix``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from uwsx import _runtime
from uwsx.ports.backend import Backend
from uwsx.ports.queue import Queue, TaskClaim
from uwsx.testing.contract._base import BackendOpener, ContractBase, bad_input, gather, queue_of

__all__ = ["QueueTasksContract"]

LONG = 600.0


def _fence() -> str:
    return _runtime.current().ids.uuid()


async def _drain(q: Queue) -> None:
    """Finish every claimable row of the space, so the test sees only its own rows."""
    for _ in range(100):
        claims = await q.task_claim_pending(limit=100, fence_ttl=LONG)
        claims += await q.task_reclaim_expired(limit=100, fence_ttl=LONG)
        if not claims:
            return
        for claim in claims:
            await q.task_fail(claim.id, claim.fence, "drained by the contract suite")


async def _reclaim_and_commit(q: Queue, who: str) -> list[tuple[str, bool]]:
    claims = await q.task_reclaim_expired(limit=10, fence_ttl=LONG)
    return [(who, await q.task_commit(c.id, c.fence, who)) for c in claims]


async def _commit(q: Queue, task_id: str, fence: str, who: str) -> list[tuple[str, bool]]:
    return [(who, await q.task_commit(task_id, fence, who))]


class QueueTasksContract(ContractBase):
    """Tasks of :class:`uwsx.ports.Queue` (see its module docstring)."""

    def tasks(self, backend: Backend) -> Queue:
        """The queue port in this class's space."""
        return queue_of(backend).space(self.uwsx_space("queue"))

    async def _insert(
        self,
        q: Queue,
        status: Literal["pending", "running"] = "running",
        *,
        name: str = "job",
        input: str = "{}",
        fence_ttl: float = LONG,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> tuple[str, str]:
        """Insert a row with a unique id; returns ``(task_id, fence)``."""
        task_id, fence = self.unique("task"), _fence()
        await q.task_insert(
            task_id,
            name,
            input,
            status=status,
            fence=fence,
            fence_ttl=fence_ttl,
            idempotency_key=idempotency_key,
            request_id=request_id,
        )
        return task_id, fence

    async def test_queue_task_insert_pending_then_read(self, backend: Backend) -> None:
        q = self.tasks(backend)
        assert await q.task_read(self.unique("task")) is None
        task_id, _ = await self._insert(
            q, "pending", name="mail", input='{"to": "ä"}', idempotency_key="ik", request_id="rq"
        )
        row = await q.task_read(task_id)
        assert row is not None
        assert (row.id, row.name, row.input) == (task_id, "mail", '{"to": "ä"}')
        assert (row.idempotency_key, row.request_id) == ("ik", "rq")
        assert (row.status, row.result, row.error, row.attempts) == ("pending", None, None, 0)
        assert row.updated_at >= row.created_at

    async def test_queue_task_commit_applies_once_with_the_fence(self, backend: Backend) -> None:
        q = self.tasks(backend)
        task_id, fence = await self._insert(q)
        row = await q.task_read(task_id)
        assert row is not None
        assert (row.status, row.attempts, row.idempotency_key) == ("running", 1, None)
        assert await q.task_commit(task_id, _fence(), '"wrong"') is False
        assert await q.task_commit(task_id, fence, '{"ok": true}') is True
        assert await q.task_commit(task_id, fence, '"again"') is False
        assert await q.task_fail(task_id, fence, "late") is False
        done = await q.task_read(task_id)
        assert done is not None
        assert (done.status, done.result, done.error) == ("committed", '{"ok": true}', None)
        assert await q.task_commit(self.unique("task"), fence, "x") is False

    async def test_queue_task_fail_records_the_error(self, backend: Backend) -> None:
        q = self.tasks(backend)
        task_id, fence = await self._insert(q)
        assert await q.task_fail(task_id, _fence(), "wrong fence") is False
        assert await q.task_fail(task_id, fence, "boom") is True
        row = await q.task_read(task_id)
        assert row is not None
        assert (row.status, row.error, row.result) == ("failed", "boom", None)
        assert await q.task_commit(task_id, fence, "x") is False

    async def test_queue_task_pending_row_cannot_be_committed(self, backend: Backend) -> None:
        q = self.tasks(backend)
        task_id, fence = await self._insert(q, "pending")
        assert await q.task_commit(task_id, fence, "x") is False
        assert await q.task_heartbeat(task_id, fence, fence_ttl=LONG) is False
        assert await q.task_rearm(task_id, _fence(), attempt=2, fence_ttl=LONG) is False
        assert await q.task_expire_fence(task_id) is None

    async def test_queue_task_heartbeat_extends_only_a_live_fence(self, backend: Backend) -> None:
        q = self.tasks(backend)
        task_id, fence = await self._insert(q, fence_ttl=30.0)
        before = await q.task_read(task_id)
        assert await q.task_heartbeat(task_id, _fence(), fence_ttl=LONG) is False
        assert await q.task_heartbeat(task_id, fence, fence_ttl=LONG) is True
        after = await q.task_read(task_id)
        assert before is not None
        assert after is not None
        assert after.fence_expires_at > before.fence_expires_at
        assert await q.task_expire_fence(task_id) == fence
        assert await q.task_heartbeat(task_id, fence, fence_ttl=LONG) is False, (
            "a holder whose fence lapsed must not revive it"
        )

    async def test_queue_task_rearm_installs_a_new_fence(self, backend: Backend) -> None:
        q = self.tasks(backend)
        task_id, old = await self._insert(q)
        new = _fence()
        assert await q.task_rearm(task_id, new, attempt=2, fence_ttl=LONG) is True
        row = await q.task_read(task_id)
        assert row is not None
        assert (row.status, row.attempts) == ("running", 2)
        assert await q.task_commit(task_id, old, "x") is False
        assert await q.task_commit(task_id, new, "y") is True
        assert await q.task_rearm(task_id, _fence(), attempt=3, fence_ttl=LONG) is False

    async def test_queue_task_claim_pending_moves_rows_to_running(self, backend: Backend) -> None:
        q = self.tasks(backend)
        await _drain(q)
        name = self.unique("name")
        pending = {(await self._insert(q, "pending", name=name, input=f"{i}"))[0] for i in range(3)}
        running, running_fence = await self._insert(q, name=name)
        first = await q.task_claim_pending(limit=2, fence_ttl=LONG)
        rest = await q.task_claim_pending(limit=10, fence_ttl=LONG)
        assert len(first) == 2
        claims = first + rest
        assert {c.id for c in claims} == pending, "running rows are not claimed"
        assert await q.task_claim_pending(limit=10, fence_ttl=LONG) == []
        for claim in claims:
            assert (claim.name, claim.attempts) == (name, 1)
            assert await q.task_commit(claim.id, claim.fence, "done") is True
        assert len({c.fence for c in claims}) == 3
        assert await q.task_commit(running, running_fence, "still mine") is True

    async def test_queue_task_reclaim_takes_over_lapsed_rows(self, backend: Backend) -> None:
        q = self.tasks(backend)
        await _drain(q)
        lapsed, old = await self._insert(q, fence_ttl=0.1)
        live, live_fence = await self._insert(q)
        claims = await self.eventually(
            lambda: q.task_reclaim_expired(limit=10, fence_ttl=LONG), bool, "the fence to lapse"
        )
        assert [c.id for c in claims] == [lapsed]
        assert claims[0].fence != old
        assert claims[0].attempts == 2
        assert await q.task_commit(lapsed, old, "stale") is False
        assert await q.task_commit(lapsed, claims[0].fence, "fresh") is True
        assert await q.task_commit(live, live_fence, "untouched") is True

    async def test_queue_task_expire_fence_makes_row_reclaimable(self, backend: Backend) -> None:
        q = self.tasks(backend)
        await _drain(q)
        assert await q.task_expire_fence(self.unique("task")) is None
        task_id, fence = await self._insert(q)
        assert await q.task_expire_fence(task_id) == fence
        [claim] = await q.task_reclaim_expired(limit=10, fence_ttl=LONG)
        assert claim.id == task_id
        assert await q.task_commit(task_id, claim.fence, "x") is True

    async def test_queue_task_list_newest_first_with_filters(self, backend: Backend) -> None:
        q = self.tasks(backend)
        name = self.unique("name")
        ids = [(await self._insert(q, "pending", name=name))[0] for _ in range(4)]
        done, fence = await self._insert(q, name=name)
        await q.task_commit(done, fence, "ok")
        rows = await q.task_list(name=name, status="pending")
        assert [r.id for r in rows] == ids[::-1]
        page = await q.task_list(name=name, status="pending", limit=2, offset=1)
        assert [r.id for r in page] == ids[::-1][1:3]
        assert [r.id for r in await q.task_list(name=name, status="committed")] == [done]
        assert len(await q.task_list(name=name)) == 5
        assert await q.task_list(name=self.unique("name")) == []

    async def test_queue_task_counts_by_status(self, backend: Backend) -> None:
        q = self.tasks(backend)
        name = self.unique("name")
        await self._insert(q, "pending", name=name)
        await self._insert(q, name=name)
        committed, c_fence = await self._insert(q, name=name)
        failed, f_fence = await self._insert(q, name=name)
        await q.task_commit(committed, c_fence, "ok")
        await q.task_fail(failed, f_fence, "no")
        counts = dict(await q.task_counts(name=name))
        assert counts == {"pending": 1, "running": 1, "committed": 1, "failed": 1, "total": 4}
        empty = dict(await q.task_counts(name=self.unique("name")))
        assert empty == {"pending": 0, "running": 0, "committed": 0, "failed": 0, "total": 0}

    async def test_queue_task_cleanup_removes_old_finished_rows(self, backend: Backend) -> None:
        q = self.tasks(backend)
        done, fence = await self._insert(q)
        await q.task_commit(done, fence, "ok")
        waiting, _ = await self._insert(q, "pending")
        running, _ = await self._insert(q)
        assert await q.task_cleanup(older_than=LONG) >= 0
        assert await q.task_read(done) is not None, "a fresh row is not old enough"

        async def cleaned() -> bool:
            await q.task_cleanup(older_than=0.05)
            return await q.task_read(done) is None

        await self.eventually(cleaned, bool, "the committed row to be cleaned up")
        assert await q.task_read(waiting) is not None
        assert await q.task_read(running) is not None

    async def test_queue_tasks_reject_bad_input(self, backend: Backend) -> None:
        q, task_id = self.tasks(backend), self.unique("task")
        base: dict[str, Any] = {"status": "pending", "fence": "f", "fence_ttl": 1.0}
        cases: list[tuple[str, type[Exception], dict[str, Any]]] = [
            ("status", ValueError, {"status": "committed"}),
            ("fence_ttl", ValueError, {"fence_ttl": 0}),
            ("fence", ValueError, {"fence": ""}),
        ]
        for what, kind, change in cases:
            with bad_input(what, kind):
                await q.task_insert(task_id, "n", "{}", **{**base, **change})
        with bad_input("task_id", ValueError):
            await q.task_insert("", "n", "{}", status="pending", fence="f", fence_ttl=1.0)
        with bad_input("input", TypeError):
            await q.task_insert(task_id, "n", 1, status="pending", fence="f", fence_ttl=1.0)  # type: ignore[arg-type]
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("limit", lambda: q.task_claim_pending(limit=0, fence_ttl=1.0)),
            ("fence_ttl", lambda: q.task_claim_pending(limit=1, fence_ttl=0)),
            ("limit", lambda: q.task_reclaim_expired(limit=0, fence_ttl=1.0)),
            ("fence_ttl", lambda: q.task_heartbeat(task_id, "f", fence_ttl=-1.0)),
            ("attempt", lambda: q.task_rearm(task_id, "f", attempt=0, fence_ttl=1.0)),
            ("limit", lambda: q.task_list(limit=0)),
            ("offset", lambda: q.task_list(offset=-1)),
            ("older_than", lambda: q.task_cleanup(older_than=0)),
        ]
        for what, call in calls:
            with bad_input(what, ValueError):
                await call()
        assert await q.task_read(task_id) is None

    async def test_queue_concurrent_task_claims_each_row_once(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        ports = [self.tasks(c) for c in await self.clients(open_backend)]
        await _drain(ports[0])
        name = self.unique("name")
        ids = {(await self._insert(ports[0], "pending", name=name))[0] for _ in range(30)}
        claims: list[TaskClaim] = []

        async def worker(port: Queue) -> None:
            while got := await port.task_claim_pending(limit=2, fence_ttl=LONG):
                claims.extend(got)

        await gather(worker(port) for port in ports for _ in range(2))
        counts = Counter(c.id for c in claims)
        assert {i: n for i, n in counts.items() if n > 1} == {}, "a task was claimed twice"
        assert set(counts) == ids

    async def test_queue_task_commit_applies_at_most_once_under_concurrent_claimers(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        ports = [self.tasks(c) for c in await self.clients(open_backend)]
        await _drain(ports[0])
        for round_ in range(10):
            task_id, fence = await self._insert(ports[0])
            assert await ports[0].task_expire_fence(task_id) == fence

            racers = [_reclaim_and_commit(port, f"c{i}") for i, port in enumerate(ports)]
            # Let the lapsed holder race ahead of the claimers, or behind them.
            late = _commit(ports[0], task_id, fence, "orig")
            racers.insert(0 if round_ % 2 else len(racers), late)
            results = await gather(racers)
            commits = [who for outcome in results for who, ok in outcome if ok]
            assert len(commits) == 1, f"round {round_}: committed by {commits}"
            row = await ports[0].task_read(task_id)
            assert row is not None
            assert (row.status, row.result) == ("committed", commits[0])
