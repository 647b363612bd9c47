"""The Stream port contract: the SortedLog contract (approximate trimming) plus idempotent
append, whose duplicates never advance the counter."""

from __future__ import annotations

import json
from typing import Any

import pytest

from uwsx.errors import UnsupportedBackendError
from uwsx.ports.backend import Backend, Capability
from uwsx.testing.contract._base import BackendOpener, ContractBase, bad_input, gather, stream_of
from uwsx.testing.contract._log_cases import bind_log_cases

__all__ = ["StreamContract"]


def _data(i: int) -> str:
    return json.dumps({"i": i})


class StreamContract(ContractBase):
    """Every operation of :class:`uwsx.ports.Stream` on ``backend.stream``."""

    async def test_stream_idempotent_append_records_the_request(self, backend: Backend) -> None:
        st, name = stream_of(backend), self.unique("log")
        first = await st.append_idempotent(
            name, "e", _data(1), producer_id="p1", request_id="r1", max_size=10
        )
        assert (first.seq, first.duplicate) == (1, False)
        retry = await st.append_idempotent(
            name, "other", _data(2), producer_id="p1", request_id="r1", max_size=10
        )
        assert (retry.seq, retry.duplicate) == (1, True)
        assert (await st.bounds(name)).newest == 1, "a duplicate must not advance the counter"
        assert [(e.seq, e.event, e.data) for e in await st.read_after(name, 0)] == [
            (1, "e", _data(1))
        ]
        assert (await st.append(name, "e", _data(3), max_size=10)).seq == 2

    async def test_stream_dedup_is_per_producer_and_log(self, backend: Backend) -> None:
        st, one, two = stream_of(backend), self.unique("log"), self.unique("log")
        first = await st.append_idempotent(
            one, "e", "{}", producer_id="p1", request_id="r1", max_size=10
        )
        assert first.seq == 1
        other_producer = await st.append_idempotent(
            one, "e", "{}", producer_id="p2", request_id="r1", max_size=10
        )
        assert (other_producer.seq, other_producer.duplicate) == (2, False)
        other_log = await st.append_idempotent(
            two, "e", "{}", producer_id="p1", request_id="r1", max_size=10
        )
        assert (other_log.seq, other_log.duplicate) == (1, False)
        fresh = await st.append_idempotent(
            one, "e", "{}", producer_id="p1", request_id="r2", max_size=10
        )
        assert (fresh.seq, fresh.duplicate) == (3, False)

    async def test_stream_dedup_outlives_trimmed_entries(self, backend: Backend) -> None:
        st, name = stream_of(backend), self.unique("log")
        for i in range(1, 6):
            await st.append_idempotent(
                name, "e", _data(i), producer_id="p", request_id=f"r{i}", max_size=1
            )
        retry = await st.append_idempotent(
            name, "e", _data(1), producer_id="p", request_id="r1", max_size=1
        )
        assert (retry.seq, retry.duplicate) == (1, True)
        assert (await st.bounds(name)).newest == 5

    async def test_stream_dedup_records_expire_after_dedup_ttl(self, backend: Backend) -> None:
        st, name = stream_of(backend), self.unique("log")

        async def send() -> tuple[int, bool]:
            a = await st.append_idempotent(
                name, "e", "{}", producer_id="p", request_id="r", max_size=10, dedup_ttl=0.1
            )
            return a.seq, a.duplicate

        assert await send() == (1, False)
        fresh = await self.eventually(send, lambda r: not r[1], "the dedup record to expire")
        assert fresh == (2, False)

    async def test_stream_idempotent_rejects_bad_input(self, backend: Backend) -> None:
        st, name = stream_of(backend), self.unique("log")
        base: dict[str, Any] = {"producer_id": "p", "request_id": "r", "max_size": 10}
        cases: list[tuple[str, type[Exception], dict[str, Any]]] = [
            ("producer_id", ValueError, {"producer_id": ""}),
            ("producer_id", TypeError, {"producer_id": 7}),
            ("request_id", ValueError, {"request_id": ""}),
            ("request_id", TypeError, {"request_id": None}),
            ("max_size", ValueError, {"max_size": 0}),
            ("dedup_ttl", ValueError, {"dedup_ttl": 0}),
            ("dedup_ttl", ValueError, {"dedup_ttl": -1.0}),
            ("ttl", ValueError, {"ttl": 0}),
        ]
        for what, kind, change in cases:
            with bad_input(what, kind):
                await st.append_idempotent(name, "e", "{}", **{**base, **change})
        with bad_input("data", TypeError):
            await st.append_idempotent(name, "e", 5, **base)  # type: ignore[arg-type]
        assert (await st.bounds(name)).newest == 0

    async def test_stream_idempotent_replica_wait_needs_the_capability(
        self, backend: Backend
    ) -> None:
        st, name = stream_of(backend), self.unique("log")
        kw: dict[str, Any] = {"producer_id": "p", "request_id": "r", "max_size": 10}
        if Capability.REPLICA_WAIT in backend.capabilities:
            appended = await st.append_idempotent(name, "e", "{}", replicas=(0, 1.0), **kw)
            assert isinstance(appended.replicas, int)
            return
        with pytest.raises(UnsupportedBackendError):
            await st.append_idempotent(name, "e", "{}", replicas=(1, 0.1), **kw)
        assert (await st.bounds(name)).newest == 0

    async def test_stream_concurrent_idempotent_appends_have_no_gap(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        ports = [stream_of(c) for c in await self.clients(open_backend)]
        name = self.unique("log")
        results = await gather(
            port.append_idempotent(
                name, "e", _data(j), producer_id=f"p{c}", request_id=f"r{j}", max_size=1000
            )
            for c, port in enumerate(ports)
            for j in range(50)
        )
        assert sorted(r.seq for r in results) == list(range(1, 50 * len(ports) + 1))
        assert not any(r.duplicate for r in results)

    async def test_stream_concurrent_duplicates_never_advance_the_counter(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        ports = [stream_of(c) for c in await self.clients(open_backend)]
        name, requests = self.unique("log"), 10
        results = await gather(
            port.append_idempotent(
                name, "e", _data(r), producer_id="p", request_id=f"r{r}", max_size=1000
            )
            for r in range(requests)
            for port in ports
            for _ in range(2)
        )
        per_request = 2 * len(ports)
        fresh_seqs = []
        for r in range(requests):
            mine = results[r * per_request : (r + 1) * per_request]
            fresh = [a for a in mine if not a.duplicate]
            assert len(fresh) == 1, f"request r{r} was appended {len(fresh)} times"
            assert {a.seq for a in mine} == {fresh[0].seq}, f"r{r}: duplicates got other seqs"
            fresh_seqs.append(fresh[0].seq)
        assert sorted(fresh_seqs) == list(range(1, requests + 1))
        assert (await ports[0].bounds(name)).newest == requests
        assert len(await ports[0].read_after(name, 0)) == requests


bind_log_cases(StreamContract, "stream", exact_trim=False)
