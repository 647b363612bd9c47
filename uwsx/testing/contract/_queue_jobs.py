"""Queue contract, part 1: jobs with claim tokens and visibility deadlines.

Every test works in the class's queue space (``uwsx_space("queue")``) with queue names of its
own, so a table-per-space backend creates one table for the whole class.
"""

from __future__ import annotations

from collections import Counter

import pytest

from uwsx.errors import InvalidNameError
from uwsx.ports.backend import Backend
from uwsx.ports.queue import Job, Queue
from uwsx.testing.contract._base import (
    INVALID_SPACE_NAMES,
    BackendOpener,
    ContractBase,
    bad_input,
    gather,
    queue_of,
)

__all__ = ["QueueJobsContract"]

LONG = 600.0


class QueueJobsContract(ContractBase):
    """Jobs of :class:`uwsx.ports.Queue` (see its module docstring)."""

    def jobs(self, backend: Backend) -> Queue:
        """The queue port in this class's space."""
        return queue_of(backend).space(self.uwsx_space("queue"))

    async def test_queue_enqueue_then_claim_returns_the_job(self, backend: Backend) -> None:
        q, name = self.jobs(backend), self.unique("q")
        job_id = await q.enqueue(name, '{"n": "é"}', request_id="req-1")
        assert isinstance(job_id, str)
        assert job_id
        [job] = await q.claim(name, limit=5, visibility=LONG)
        assert (job.id, job.queue, job.payload) == (job_id, name, '{"n": "é"}')
        assert (job.request_id, job.attempts) == ("req-1", 1)
        assert isinstance(job.created_at, float)
        assert isinstance(job.token, str)
        assert job.token
        assert await q.claim(name, limit=5, visibility=LONG) == [], "a live claim hides the job"

    async def test_queue_claim_takes_oldest_first_up_to_limit(self, backend: Backend) -> None:
        q, name = self.jobs(backend), self.unique("q")
        ids = [await q.enqueue(name, f'{{"i": {i}}}') for i in range(5)]
        assert len(set(ids)) == 5
        first = await q.claim(name, limit=2, visibility=LONG)
        rest = await q.claim(name, limit=10, visibility=LONG)
        assert [j.id for j in first] == ids[:2]
        assert [j.id for j in rest] == ids[2:]
        assert all(j.request_id is None for j in first + rest)
        assert len({j.token for j in first + rest}) == 5, "every claimed job gets its own token"

    async def test_queue_claim_after_visibility_expires(self, backend: Backend) -> None:
        q, name = self.jobs(backend), self.unique("q")
        await q.enqueue(name, "{}")
        [first] = await q.claim(name, limit=1, visibility=0.1)
        again = await self.eventually(
            lambda: q.claim(name, limit=1, visibility=LONG), bool, "the claim to lapse"
        )
        [second] = again
        assert second.id == first.id
        assert second.attempts == 2
        assert second.token != first.token, "a re-claim rotates the token"

    async def test_queue_complete_deletes_the_job(self, backend: Backend) -> None:
        q, name = self.jobs(backend), self.unique("q")
        await q.enqueue(name, "{}")
        [job] = await q.claim(name, limit=1, visibility=LONG)
        assert await q.complete([(job.id, job.token)]) == [job.id]
        assert await q.complete([(job.id, job.token)]) == []
        assert await q.pending(name) == 0
        assert await q.clear(name) == 0, "a completed job no longer exists"

    async def test_queue_a_claim_listed_twice_acts_once(self, backend: Backend) -> None:
        q, name = self.jobs(backend), self.unique("q")
        await q.enqueue(name, "a")
        await q.enqueue(name, "b")
        held = await q.claim(name, limit=2, visibility=LONG)
        first, second = ((j.id, j.token) for j in held)
        assert await q.extend([first, first], by=LONG) == [first[0]]
        assert await q.fail([second, second]) == [second[0]]
        assert await q.complete([first, first]) == [first[0]]
        assert await q.pending(name) == 1

    async def test_queue_fail_releases_and_keeps_attempts(self, backend: Backend) -> None:
        q, name = self.jobs(backend), self.unique("q")
        await q.enqueue(name, "{}")
        [job] = await q.claim(name, limit=1, visibility=LONG)
        assert await q.pending(name) == 0
        assert await q.fail([(job.id, job.token)]) == [job.id]
        assert await q.pending(name) == 1
        [again] = await q.claim(name, limit=1, visibility=LONG)
        assert (again.id, again.attempts) == (job.id, 2)
        assert await q.fail([(job.id, job.token)]) == [], "the old token died with the re-claim"

    async def test_queue_extend_pushes_the_deadline(self, backend: Backend) -> None:
        q, name = self.jobs(backend), self.unique("q")
        kept_id = await q.enqueue(name, "kept")
        lapsing_id = await q.enqueue(name, "lapsing")
        # Long enough that the extend below lands while the claim is live, even on a slow link.
        jobs = await q.claim(name, limit=2, visibility=0.5)
        kept = next(j for j in jobs if j.id == kept_id)
        assert await q.extend([(kept.id, kept.token)], by=LONG) == [kept.id]
        again = await self.eventually(
            lambda: q.claim(name, limit=2, visibility=LONG), bool, "the unextended claim to lapse"
        )
        assert [j.id for j in again] == [lapsing_id]
        assert await q.complete([(kept.id, kept.token)]) == [kept.id]

    async def test_queue_wrong_token_or_unknown_id_does_nothing(self, backend: Backend) -> None:
        q, name = self.jobs(backend), self.unique("q")
        await q.enqueue(name, "{}")
        [job] = await q.claim(name, limit=1, visibility=LONG)
        for act in (q.complete, q.fail):
            assert await act([(job.id, "not-the-token")]) == []
            assert await act([("999999999", job.token), ("no-such-id", job.token)]) == []
        assert await q.extend([(job.id, "not-the-token")], by=10.0) == []
        assert await q.complete([]) == []
        acted = await q.complete([("no-such-id", "x"), (job.id, job.token)])
        assert acted == [job.id], "only the pairs still held are acted on"

    async def test_queue_stale_claimant_cannot_act(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        stale, fresh = (self.jobs(c) for c in await self.clients(open_backend, 2))
        name = self.unique("q")
        await stale.enqueue(name, "{}")
        [old] = await stale.claim(name, limit=1, visibility=0.1)
        [new] = await self.eventually(
            lambda: fresh.claim(name, limit=1, visibility=LONG), bool, "the claim to lapse"
        )
        assert new.id == old.id
        claim = [(old.id, old.token)]
        assert await stale.extend(claim, by=LONG) == []
        assert await stale.fail(claim) == []
        assert await stale.complete(claim) == []
        assert await fresh.claim(name, limit=1, visibility=LONG) == [], "the job is still held"
        assert await fresh.complete([(new.id, new.token)]) == [new.id]

    async def test_queue_pending_counts_unclaimed_jobs(self, backend: Backend) -> None:
        q, one, two = self.jobs(backend), self.unique("q"), self.unique("q")
        before = await q.pending()
        for _ in range(3):
            await q.enqueue(one, "{}")
        await q.enqueue(two, "{}")
        assert (await q.pending(one), await q.pending(two)) == (3, 1)
        assert await q.pending() - before == 4
        await q.claim(one, limit=2, visibility=LONG)
        assert await q.pending(one) == 1
        assert await q.pending(self.unique("q")) == 0

    async def test_queue_clear_deletes_jobs_of_one_queue(self, backend: Backend) -> None:
        q, one, two = self.jobs(backend), self.unique("q"), self.unique("q")
        for _ in range(3):
            await q.enqueue(one, "{}")
        await q.enqueue(two, "{}")
        await q.claim(one, limit=1, visibility=LONG)
        assert await q.clear(one) == 3, "claimed jobs are cleared too"
        assert await q.claim(one, limit=10, visibility=0.1) == []
        assert await q.pending(two) == 1

    async def test_queue_spaces_are_independent(self, backend: Backend) -> None:
        default, spaced = queue_of(backend), self.jobs(backend)
        name = self.unique("q")
        await default.enqueue(name, "default")
        await spaced.enqueue(name, "spaced")
        [job] = await spaced.claim(name, limit=10, visibility=LONG)
        assert job.payload == "spaced"
        assert await default.pending(name) == 1
        assert await default.clear(name) == 1
        for bad in (*INVALID_SPACE_NAMES, 7):
            with pytest.raises(InvalidNameError):
                default.space(bad)  # type: ignore[arg-type]

    async def test_queue_jobs_reject_bad_input(self, backend: Backend) -> None:
        q, name = self.jobs(backend), self.unique("q")
        with bad_input("queue", ValueError):
            await q.enqueue("", "{}")
        with bad_input("payload", TypeError):
            await q.enqueue(name, {"a": 1})  # type: ignore[arg-type]
        with bad_input("request_id", TypeError):
            await q.enqueue(name, "{}", request_id=5)  # type: ignore[arg-type]
        for limit in (0, -1, 1.5):
            with bad_input("limit", ValueError):
                await q.claim(name, limit=limit, visibility=1.0)  # type: ignore[arg-type]
        for seconds in (0, -1.0, float("inf")):
            with bad_input("visibility", ValueError):
                await q.claim(name, limit=1, visibility=seconds)
            with bad_input("by", ValueError):
                await q.extend([("1", "t")], by=seconds)
        with bad_input("claims", TypeError):
            await q.complete(["1"])  # type: ignore[list-item]
        assert await q.pending(name) == 0

    async def test_queue_concurrent_claims_never_share_a_job(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        ports = [self.jobs(c) for c in await self.clients(open_backend)]
        name = self.unique("q")
        ids = [await ports[0].enqueue(name, f'{{"i": {i}}}') for i in range(80)]
        handed: list[Job] = []

        async def worker(port: Queue) -> None:
            while jobs := await port.claim(name, limit=2, visibility=LONG):
                handed.extend(jobs)

        # 20 workers: four per client.
        await gather(worker(port) for port in ports for _ in range(4))
        counts = Counter(j.id for j in handed)
        shared = {job_id: n for job_id, n in counts.items() if n > 1}
        assert not shared, f"jobs handed out more than once: {shared}"
        assert sorted(counts) == sorted(ids)
