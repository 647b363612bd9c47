"""KV contract, part 2: maps with per-field deadlines, bounded puts, and their atomicity."""

from __future__ import annotations

import math

import pytest

from uwsx.errors import BackendError
from uwsx.ports.backend import Backend
from uwsx.ports.checks import colocate
from uwsx.ports.kv import BoundedPut, MapRemoval
from uwsx.testing.contract._base import BackendOpener, ContractBase, bad_input, gather, kv_of

__all__ = ["KVMapsContract"]


class KVMapsContract(ContractBase):
    """Deadline maps of the KV port (see :mod:`uwsx.ports.kv`)."""

    async def test_kv_map_put_counts_other_live_fields(self, backend: Backend) -> None:
        kv = kv_of(backend)
        assert await kv.map_put("m", "a", "1") == 0
        assert await kv.map_put("m", "b", "2") == 1
        assert await kv.map_put("m", "a", "3") == 1, "the field itself is never counted"
        assert await kv.map_put("m", "c", "4", ttl=30.0) == 2
        assert await kv.map_items("m") == {"a": "3", "b": "2", "c": "4"}

    async def test_kv_map_put_counts_only_the_prefix(self, backend: Backend) -> None:
        kv = kv_of(backend)
        assert await kv.map_put("p", "u1:i1", "x", prefix="u1:") == 0
        assert await kv.map_put("p", "u2:i1", "x", prefix="u2:") == 0
        assert await kv.map_put("p", "u1:i2", "x", prefix="u1:") == 1
        assert await kv.map_put("p", "u1:i2", "y", prefix="u1:") == 1
        assert await kv.map_put("p", "u3:i1", "x", prefix="") == 3

    async def test_kv_map_put_many_sets_every_field(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.map_put_many("m", {})
        assert await kv.ttl("m") is None, "an empty put_many creates nothing"
        await kv.map_put_many("m", {"a": "1", "b": "2"})
        await kv.map_put_many("m", {"b": "3", "c": "4"}, ttl=30.0)
        assert await kv.map_items("m") == {"a": "1", "b": "3", "c": "4"}
        assert await kv.map_count("m") == 3

    async def test_kv_map_reads_of_absent_map_and_field(self, backend: Backend) -> None:
        kv = kv_of(backend)
        assert await kv.map_get("m", "f") is None
        assert await kv.map_items("m") == {}
        assert await kv.map_count("m") == 0
        await kv.map_put("m", "f", "v")
        assert await kv.map_get("m", "f") == "v"
        assert await kv.map_get("m", "other") is None

    async def test_kv_map_field_expires_alone(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.map_put("m", "stay", "1")
        await kv.map_put("m", "go", "2", ttl=0.1)
        await self.eventually(lambda: kv.map_count("m"), lambda n: n == 1, "field 'go' to expire")
        assert await kv.map_get("m", "go") is None
        assert await kv.map_items("m") == {"stay": "1"}
        assert await kv.ttl("m") == math.inf, "field deadlines are not the key's TTL"

    async def test_kv_map_without_live_fields_does_not_exist(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.map_put("m", "only", "1", ttl=0.1)
        await self.eventually(lambda: kv.map_count("m"), lambda n: n == 0, "the last field")
        assert await kv.ttl("m") is None
        assert await kv.get("m") is None, "an empty map is no key, so no WRONGTYPE either"
        assert await kv.delete("m") == 0
        await kv.set("m", "now a string")
        assert await kv.get("m") == "now a string"

    async def test_kv_map_remove_reports_what_remains(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.map_put_many("m", {"u1:a": "x", "u1:b": "x", "u2:a": "x"})
        assert await kv.map_remove("m", "u1:a", prefix="u1:") == MapRemoval(True, 1)
        assert await kv.map_remove("m", "u1:a", prefix="u1:") == MapRemoval(False, 1)
        last = await kv.map_remove("m", "u1:b", prefix="u1:")
        assert last == MapRemoval(True, 0)
        assert last.gone
        assert await kv.map_remove("m", "u9:z") == MapRemoval(False, 1)
        assert await kv.map_items("m") == {"u2:a": "x"}

    async def test_kv_map_remove_of_absent_map(self, backend: Backend) -> None:
        result = await kv_of(backend).map_remove("missing", "f", prefix="f")
        assert result == MapRemoval(False, 0)
        assert not result.gone

    async def test_kv_map_remove_of_last_field_removes_map(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.map_put("m", "f", "v")
        assert (await kv.map_remove("m", "f")).gone
        assert await kv.ttl("m") is None
        assert await kv.get("m") is None

    async def test_kv_map_remove_skips_expired_fields(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.map_put("m", "a:live", "x")
        await kv.map_put("m", "a:dead", "x", ttl=0.1)
        await kv.map_put("m", "b:live", "x")
        await self.eventually(lambda: kv.map_count("m"), lambda n: n == 2, "'a:dead' to expire")
        assert await kv.map_remove("m", "a:live", prefix="a:") == MapRemoval(True, 0)
        assert await kv.map_remove("m", "a:dead", prefix="a:") == MapRemoval(False, 0)

    async def test_kv_map_sweep_removes_only_expired_fields(self, backend: Backend) -> None:
        kv = kv_of(backend)
        assert await kv.map_sweep("missing") == 0
        await kv.map_put_many("m", {"a": "1", "b": "2"})
        assert await kv.map_sweep("m") == 0
        await kv.map_put_many("m", {"c": "3", "d": "4"}, ttl=0.1)
        await self.eventually(lambda: kv.map_count("m"), lambda n: n == 2, "fields to expire")
        swept = await kv.map_sweep("m")
        assert 0 <= swept <= 2, "a backend that expires fields itself may find nothing to sweep"
        assert await kv.map_sweep("m") == 0
        assert await kv.map_items("m") == {"a": "1", "b": "2"}

    async def test_kv_map_sweep_of_an_expired_map_finds_nothing(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.map_put_many("gone", {"a": "1", "b": "2"}, ttl=60.0)
        assert await kv.expire("gone", 0.05)
        # Wait on another key, so the sweep is the first to touch the expired map.
        await kv.set("later", "v", ttl=0.1)
        await self.eventually(lambda: kv.get("later"), lambda v: v is None, "'later' to expire")
        assert await kv.map_sweep("gone") == 0
        assert await kv.ttl("gone") is None

    async def test_kv_map_put_bounded_stores_until_full(self, backend: Backend) -> None:
        kv = kv_of(backend)
        first = await kv.map_put_bounded("g", "m1", "a", max_fields=2)
        assert first == BoundedPut("stored", {"m1": "a"})
        second = await kv.map_put_bounded("g", "m2", "b", max_fields=2, ttl=30.0)
        assert second == BoundedPut("stored", {"m1": "a", "m2": "b"})
        full = await kv.map_put_bounded("g", "m3", "c", max_fields=2)
        assert full.status == "full"
        assert dict(full.items) == {}
        assert await kv.map_items("g") == {"m1": "a", "m2": "b"}

    async def test_kv_map_put_bounded_updates_existing_field_when_full(
        self, backend: Backend
    ) -> None:
        kv = kv_of(backend)
        await kv.map_put_many("g", {"m1": "a", "m2": "b"})
        again = await kv.map_put_bounded("g", "m1", "new", max_fields=2)
        assert again == BoundedPut("stored", {"m1": "new", "m2": "b"})

    async def test_kv_map_put_bounded_is_closed_by_unless_key(self, backend: Backend) -> None:
        kv = kv_of(backend)
        tag = colocate("room:1")
        members, closed = f"grp:{tag}:members", f"grp:{tag}:closed"
        await kv.set(closed, "1")
        result = await kv.map_put_bounded(members, "m1", "a", max_fields=5, unless_key=closed)
        assert result == BoundedPut("closed", {})
        assert await kv.map_items(members) == {}
        await kv.delete(closed)
        reopened = await kv.map_put_bounded(members, "m1", "a", max_fields=5, unless_key=closed)
        assert reopened.status == "stored"

    async def test_kv_map_put_bounded_closed_wins_over_a_wrong_kind(self, backend: Backend) -> None:
        kv = kv_of(backend)
        tag = colocate("room:2")
        members, closed = f"grp:{tag}:members", f"grp:{tag}:closed"
        await kv.set(members, "not a map")
        await kv.set(closed, "1")
        result = await kv.map_put_bounded(members, "m1", "a", max_fields=5, unless_key=closed)
        assert result == BoundedPut("closed", {})
        await kv.delete(closed)
        with pytest.raises(BackendError):
            await kv.map_put_bounded(members, "m1", "a", max_fields=5, unless_key=closed)
        assert await kv.get(members) == "not a map"

    async def test_kv_map_put_bounded_without_bound(self, backend: Backend) -> None:
        kv = kv_of(backend)
        for i in range(12):
            result = await kv.map_put_bounded("g", f"m{i}", "v", max_fields=None)
            assert result.status == "stored"
        assert await kv.map_count("g") == 12

    async def test_kv_map_put_bounded_ignores_expired_fields(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.map_put_bounded("g", "stay", "a", max_fields=2)
        await kv.map_put_bounded("g", "go", "b", max_fields=2, ttl=0.1)
        await self.eventually(lambda: kv.map_count("g"), lambda n: n == 1, "'go' to expire")
        result = await kv.map_put_bounded("g", "new", "c", max_fields=2)
        assert result == BoundedPut("stored", {"stay": "a", "new": "c"})

    async def test_kv_map_rejects_bad_input(self, backend: Backend) -> None:
        kv = kv_of(backend)
        with bad_input("field", ValueError):
            await kv.map_put("m", "", "v")
        with bad_input("field", TypeError):
            await kv.map_put("m", 1, "v")  # type: ignore[arg-type]
        with bad_input("value", TypeError):
            await kv.map_put("m", "f", 1)  # type: ignore[arg-type]
        with bad_input("field", ValueError):
            await kv.map_put_many("m", {"ok": "v", "": "v"})
        with bad_input("value", TypeError):
            await kv.map_put_many("m", {"ok": "v", "bad": None})  # type: ignore[dict-item]
        with bad_input("field", ValueError):
            await kv.map_get("m", "")
        with bad_input("field", ValueError):
            await kv.map_remove("m", "")
        for bound in (0, -1, 1.5, True):
            with bad_input("max_fields", ValueError):
                await kv.map_put_bounded("m", "f", "v", max_fields=bound)  # type: ignore[arg-type]
        with bad_input("key", ValueError):
            await kv.map_put_bounded("m", "f", "v", max_fields=2, unless_key="")
        assert await kv.map_items("m") == {}, "rejected calls must store nothing"

    async def test_kv_map_first_holder_is_seen_once(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        ports = [kv_of(c) for c in await self.clients(open_backend)]
        for round_ in range(20):
            key = f"presence:{round_}"
            others = await gather(
                port.map_put(key, f"user:{i}", "x", prefix="user:") for i, port in enumerate(ports)
            )
            assert sorted(others) == list(range(len(ports))), f"round {round_}: {others}"

    async def test_kv_map_remove_of_last_two_holders_reports_gone_once(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        one, two = (kv_of(c) for c in await self.clients(open_backend, 2))
        for round_ in range(50):
            key = f"presence:{round_}"
            await one.map_put_many(key, {"u:1": "x", "u:2": "x", "v:1": "x"})
            results = await gather(
                [one.map_remove(key, "u:1", prefix="u:"), two.map_remove(key, "u:2", prefix="u:")]
            )
            assert all(r.removed for r in results), results
            gone = [r for r in results if r.gone]
            assert len(gone) == 1, f"round {round_}: 'gone' reported {len(gone)} times: {results}"

    @pytest.mark.parametrize("bound", [1, 5])
    async def test_kv_concurrent_map_put_bounded_never_exceeds_bound(
        self, backend: Backend, open_backend: BackendOpener, bound: int
    ) -> None:
        ports = [kv_of(c) for c in await self.clients(open_backend)]
        for round_ in range(5):
            key = f"group:{round_}"
            results = await gather(
                port.map_put_bounded(key, f"m{i}-{j}", "x", max_fields=bound, ttl=60.0)
                for i, port in enumerate(ports)
                for j in range(4)
            )
            stored = [r for r in results if r.status == "stored"]
            assert len(stored) == bound, f"round {round_}: {len(stored)} stored, bound {bound}"
            assert all(r.status == "full" for r in results if r.status != "stored")
            assert all(len(r.items) <= bound for r in stored)
            assert await ports[0].map_count(key) == bound
