"""KV contract, part 1: strings, counters, TTLs, deletion, namespaces and kinds."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from uwsx.errors import BackendError
from uwsx.ports.backend import Backend
from uwsx.ports.checks import colocate
from uwsx.ports.kv import KV
from uwsx.testing.contract._base import (
    TTL_SLACK,
    BackendOpener,
    ContractBase,
    bad_input,
    gather,
    kv_of,
)

__all__ = ["KVStringsContract"]

KVCall = Callable[[KV], Awaitable[Any]]

_BAD_TTLS: list[Any] = [0, -1, -0.5, math.inf, math.nan]

_TTL_TAKERS: dict[str, Callable[[KV, Any], Awaitable[Any]]] = {
    "set": lambda kv, t: kv.set("k", "v", ttl=t),
    "set_if_absent": lambda kv, t: kv.set_if_absent("k", "v", ttl=t),
    "compare_and_set": lambda kv, t: kv.compare_and_set("k", "v", "w", ttl=t),
    "compare_and_expire": lambda kv, t: kv.compare_and_expire("k", "v", t),
    "expire": lambda kv, t: kv.expire("k", t),
    "incr": lambda kv, t: kv.incr("k", ttl=t),
    "map_put": lambda kv, t: kv.map_put("m", "f", "v", ttl=t),
    "map_put_many": lambda kv, t: kv.map_put_many("m", {"f": "v"}, ttl=t),
    "map_put_bounded": lambda kv, t: kv.map_put_bounded("m", "f", "v", max_fields=3, ttl=t),
}

_BAD_CALLS: dict[str, tuple[KVCall, type[Exception], str]] = {
    "get-empty-key": (lambda kv: kv.get(""), ValueError, "key"),
    "get-int-key": (lambda kv: kv.get(1), TypeError, "key"),  # type: ignore[arg-type]
    "set-empty-key": (lambda kv: kv.set("", "v"), ValueError, "key"),
    "set-int-value": (lambda kv: kv.set("k", 1), TypeError, "value"),  # type: ignore[arg-type]
    "set-bytes-value": (lambda kv: kv.set("k", b"v"), TypeError, "value"),  # type: ignore[arg-type]
    "get_many-str": (lambda kv: kv.get_many("ab"), TypeError, "key"),
    "get_many-empty-key": (lambda kv: kv.get_many(["a", ""]), ValueError, "key"),
    "cas-expected": (
        lambda kv: kv.compare_and_set("k", 1, "v"),  # type: ignore[arg-type]
        TypeError,
        "expected",
    ),
    "cad-expected": (
        lambda kv: kv.compare_and_delete("k", None),  # type: ignore[arg-type]
        TypeError,
        "expected",
    ),
    "cae-expected": (
        lambda kv: kv.compare_and_expire("k", 1, 5.0),  # type: ignore[arg-type]
        TypeError,
        "expected",
    ),
    "delete-empty-key": (lambda kv: kv.delete("a", ""), ValueError, "key"),
    "incr-str-amount": (lambda kv: kv.incr("k", "1"), TypeError, "amount"),  # type: ignore[arg-type]
    "incr-float-amount": (lambda kv: kv.incr("k", 1.5), TypeError, "amount"),  # type: ignore[arg-type]
    "incr-bool-amount": (lambda kv: kv.incr("k", True), TypeError, "amount"),
    "delete_prefix-int": (lambda kv: kv.delete_prefix(1), TypeError, "prefix"),  # type: ignore[arg-type]
}


class KVStringsContract(ContractBase):
    """Strings and counters of the KV port (see :mod:`uwsx.ports.kv`)."""

    async def test_kv_get_absent_is_none(self, backend: Backend) -> None:
        assert await kv_of(backend).get("missing") is None

    async def test_kv_set_then_get_round_trips_text(self, backend: Backend) -> None:
        kv = kv_of(backend)
        text = '{"msg": "héllo ✓ \\u0000", "n": [1, 2]}\n\ttail'
        await kv.set("doc", text)
        await kv.set("empty", "")
        assert await kv.get("doc") == text
        assert await kv.get("empty") == "", "an empty value is a value, not an absent key"

    async def test_kv_set_replaces_value_and_ttl(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.set("k", "one", ttl=60.0)
        await kv.set("k", "two")
        assert await kv.get("k") == "two"
        assert await kv.ttl("k") == math.inf, "set without ttl must clear the previous TTL"

    async def test_kv_set_with_ttl_expires(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.set("short", "v", ttl=0.1)
        await kv.set("long", "v", ttl=60.0)
        await self.eventually(lambda: kv.get("short"), lambda v: v is None, "'short' to expire")
        assert await kv.ttl("short") is None
        assert await kv.get("long") == "v"

    async def test_kv_ttl_reports_remaining_inf_or_none(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.set("forever", "v")
        await kv.set("timed", "v", ttl=30.0)
        assert await kv.ttl("missing") is None
        assert await kv.ttl("forever") == math.inf
        left = await kv.ttl("timed")
        assert left is not None
        assert 0 < left <= 30.0 + TTL_SLACK, left

    async def test_kv_get_many_keeps_order(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.set("a", "1")
        await kv.set("b", "2")
        assert await kv.get_many(["b", "missing", "a", "b"]) == ["2", None, "1", "2"]
        assert await kv.get_many([]) == []

    async def test_kv_set_if_absent_stores_once(self, backend: Backend) -> None:
        kv = kv_of(backend)
        assert await kv.set_if_absent("slot", "first") == (True, None)
        assert await kv.set_if_absent("slot", "second") == (False, "first")
        assert await kv.get("slot") == "first"

    async def test_kv_set_if_absent_after_expiry_stores_again(self, backend: Backend) -> None:
        kv = kv_of(backend)
        assert await kv.set_if_absent("slot", "old", ttl=0.1) == (True, None)
        await self.eventually(lambda: kv.get("slot"), lambda v: v is None, "the slot to expire")
        assert await kv.set_if_absent("slot", "new", ttl=60.0) == (True, None)
        assert await kv.get("slot") == "new"

    async def test_kv_compare_and_set_acts_only_on_match(self, backend: Backend) -> None:
        kv = kv_of(backend)
        assert await kv.compare_and_set("absent", "x", "y") is False
        assert await kv.get("absent") is None, "compare_and_set must not create a key"
        await kv.set("k", "a")
        assert await kv.compare_and_set("k", "b", "c") is False
        assert await kv.get("k") == "a"
        assert await kv.compare_and_set("k", "a", "c") is True
        assert await kv.get("k") == "c"

    async def test_kv_compare_and_set_replaces_ttl(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.set("k", "a")
        assert await kv.compare_and_set("k", "a", "b", ttl=30.0) is True
        left = await kv.ttl("k")
        assert left is not None
        assert 0 < left <= 30.0 + TTL_SLACK
        assert await kv.compare_and_set("k", "b", "c") is True
        assert await kv.ttl("k") == math.inf, "compare_and_set without ttl stores without expiry"

    async def test_kv_compare_and_delete_acts_only_on_match(self, backend: Backend) -> None:
        kv = kv_of(backend)
        assert await kv.compare_and_delete("absent", "x") is False
        await kv.set("k", "mine")
        assert await kv.compare_and_delete("k", "theirs") is False
        assert await kv.get("k") == "mine"
        assert await kv.compare_and_delete("k", "mine") is True
        assert await kv.get("k") is None

    async def test_kv_compare_and_expire_acts_only_on_match(self, backend: Backend) -> None:
        kv = kv_of(backend)
        assert await kv.compare_and_expire("absent", "x", 5.0) is False
        await kv.set("k", "mine")
        assert await kv.compare_and_expire("k", "theirs", 5.0) is False
        assert await kv.ttl("k") == math.inf
        assert await kv.compare_and_expire("k", "mine", 30.0) is True
        left = await kv.ttl("k")
        assert left is not None
        assert 0 < left <= 30.0 + TTL_SLACK
        assert await kv.compare_and_expire("k", "mine", 0.1) is True
        await self.eventually(lambda: kv.get("k"), lambda v: v is None, "'k' to expire")

    async def test_kv_expire_applies_to_every_kind(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.set("s", "v")
        await kv.incr("n")
        await kv.map_put("m", "f", "v")
        await kv.bucket_take("b", capacity=3, interval=600.0)
        for key in ("s", "n", "m", "b"):
            assert await kv.expire(key, 30.0) is True, key
            left = await kv.ttl(key)
            assert left is not None, key
            assert 0 < left <= 30.0 + TTL_SLACK, (key, left)
        assert await kv.expire("missing", 30.0) is False
        assert await kv.ttl("missing") is None, "expire must not create a key"
        assert await kv.expire("m", 0.1) is True
        await self.eventually(lambda: kv.map_items("m"), lambda v: v == {}, "map 'm' to expire")

    async def test_kv_delete_counts_keys_that_existed(self, backend: Backend) -> None:
        kv = kv_of(backend)
        # Keys deleted together share a co-location tag (one shard on a cluster).
        s, m, b, missing = (f"{colocate('del')}{name}" for name in ("s", "m", "b", "missing"))
        await kv.set(s, "v")
        await kv.map_put(m, "f", "v")
        await kv.bucket_take(b, capacity=3, interval=600.0)
        assert await kv.delete() == 0
        assert await kv.delete(missing) == 0
        assert await kv.delete(s, m, missing, b) == 3
        assert await kv.get(s) is None
        assert await kv.map_items(m) == {}
        assert await kv.ttl(b) is None

    async def test_kv_incr_adds_and_returns_new_value(self, backend: Backend) -> None:
        kv = kv_of(backend)
        assert await kv.incr("n") == 1
        assert await kv.incr("n") == 2
        assert await kv.incr("n", 10) == 12
        assert await kv.incr("n", -15) == -3
        assert await kv.get("n") == "-3", "a counter reads back as its decimal text"
        assert await kv.incr("other", 0) == 0
        assert await kv.ttl("n") == math.inf

    async def test_kv_incr_with_ttl_resets_ttl(self, backend: Backend) -> None:
        kv = kv_of(backend)
        assert await kv.incr("n", ttl=30.0) == 1
        left = await kv.ttl("n")
        assert left is not None
        assert 0 < left <= 30.0 + TTL_SLACK
        assert await kv.incr("n", ttl=0.1) == 2
        await self.eventually(lambda: kv.get("n"), lambda v: v is None, "counter to expire")
        assert await kv.incr("n", 5) == 5, "an expired counter restarts from 0"

    async def test_kv_incr_of_non_integer_is_backend_error(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.set("text", "not a number")
        with pytest.raises(BackendError):
            await kv.incr("text")
        assert await kv.get("text") == "not a number"

    async def test_kv_incr_counters_are_canonical_signed_64_bit(self, backend: Backend) -> None:
        kv = kv_of(backend)
        for stored in ("01", " 3", "+4", "-0", "1_0", "9223372036854775808"):
            await kv.set("c", stored)
            with pytest.raises(BackendError):
                await kv.incr("c")
            assert await kv.get("c") == stored, f"a refused incr changed {stored!r}"
        await kv.set("c", "9223372036854775807")
        with pytest.raises(BackendError):
            await kv.incr("c")
        assert await kv.incr("c", -1) == 2**63 - 2
        with pytest.raises(BackendError):
            await kv.incr("fresh", 2**63)
        assert await kv.get("fresh") is None
        assert await kv.incr("big", 2**62, ttl=600.0) == 2**62
        assert await kv.incr("big", 2**53 + 1, ttl=600.0) == 2**62 + 2**53 + 1, "no float detour"

    async def test_kv_delete_prefix_deletes_every_kind(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.set("room:1:a", "v")
        await kv.map_put("room:1:b", "f", "v")
        await kv.bucket_take("room:1:c", capacity=2, interval=600.0)
        await kv.set("room:10", "v")
        await kv.set("room:2:a", "v")
        assert await kv.delete_prefix("room:1:") == 3
        assert await kv.get("room:1:a") is None
        assert await kv.map_items("room:1:b") == {}
        assert await kv.ttl("room:1:c") is None
        assert await kv.get_many(["room:10", "room:2:a"]) == ["v", "v"]
        assert await kv.delete_prefix("nothing:") == 0

    async def test_kv_delete_prefix_stays_in_namespace(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        base = backend.key_prefix
        mine = kv_of(await open_backend(key_prefix=base + "a:"))
        theirs = kv_of(await open_backend(key_prefix=base + "b:"))
        await mine.set("x:1", "mine")
        await theirs.set("x:1", "theirs")
        assert await mine.delete_prefix("x:") == 1
        assert await mine.delete_prefix("") == 0
        assert await theirs.get("x:1") == "theirs"

    async def test_kv_key_prefix_isolates_clients(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        base = backend.key_prefix
        one = kv_of(await open_backend(key_prefix=base + "one:"))
        two = kv_of(await open_backend(key_prefix=base + "two:"))
        await one.set("k", "1")
        await two.set("k", "2")
        await one.map_put("m", "f", "1")
        assert await one.get("k") == "1"
        assert await two.get("k") == "2"
        assert await two.map_items("m") == {}
        assert await two.delete("k") == 1
        assert await one.get("k") == "1"
        same = kv_of(await open_backend(key_prefix=base + "one:"))
        assert await same.get("k") == "1", "clients with one prefix share keys"

    @pytest.mark.parametrize(
        "op",
        ["get", "set_if_absent", "compare_and_set", "incr", "map_get", "map_items", "bucket_take"],
    )
    async def test_kv_wrong_kind_is_backend_error(self, backend: Backend, op: str) -> None:
        kv = kv_of(backend)
        await kv.set("string", "v")
        await kv.map_put("map", "f", "v")
        calls: dict[str, KVCall] = {
            "get": lambda kv: kv.get("map"),
            "set_if_absent": lambda kv: kv.set_if_absent("map", "v"),
            "compare_and_set": lambda kv: kv.compare_and_set("map", "v", "w"),
            "incr": lambda kv: kv.incr("map"),
            "map_get": lambda kv: kv.map_get("string", "f"),
            "map_items": lambda kv: kv.map_items("string"),
            "bucket_take": lambda kv: kv.bucket_take("string", capacity=1, interval=1.0),
        }
        with pytest.raises(BackendError):
            await calls[op](kv)
        assert await kv.get("string") == "v"
        assert await kv.map_items("map") == {"f": "v"}

    async def test_kv_map_ops_on_string_are_backend_errors(self, backend: Backend) -> None:
        kv = kv_of(backend)
        await kv.set("string", "v")
        with pytest.raises(BackendError):
            await kv.map_put("string", "f", "v")
        with pytest.raises(BackendError):
            await kv.map_remove("string", "f")
        with pytest.raises(BackendError):
            await kv.map_count("string")
        assert await kv.get("string") == "v"

    @pytest.mark.parametrize("op", sorted(_TTL_TAKERS))
    async def test_kv_rejects_bad_ttl(self, backend: Backend, op: str) -> None:
        kv, call = kv_of(backend), _TTL_TAKERS[op]
        for ttl in _BAD_TTLS:
            with bad_input("ttl", ValueError):
                await call(kv, ttl)
        with bad_input("ttl"):
            await call(kv, "1")
        assert await kv.get("k") is None
        assert await kv.map_items("m") == {}

    @pytest.mark.parametrize("case", sorted(_BAD_CALLS))
    async def test_kv_rejects_bad_arguments(self, backend: Backend, case: str) -> None:
        call, kind, name = _BAD_CALLS[case]
        with bad_input(name, kind):
            await call(kv_of(backend))

    async def test_kv_concurrent_set_if_absent_has_one_winner(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        ports = [kv_of(c) for c in await self.clients(open_backend)]
        for round_ in range(10):
            key = f"slot:{round_}"
            results = await gather(
                port.set_if_absent(key, f"c{i}:{j}", ttl=60.0)
                for i, port in enumerate(ports)
                for j in range(4)
            )
            winners = [r for r in results if r[0]]
            assert len(winners) == 1, f"round {round_}: {len(winners)} winners"
            stored = await ports[0].get(key)
            assert stored is not None
            assert all(r == (False, stored) for r in results if not r[0]), results

    async def test_kv_concurrent_incr_counts_every_call(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        ports = [kv_of(c) for c in await self.clients(open_backend)]
        values = await gather(port.incr("hits") for port in ports for _ in range(40))
        total = 40 * len(ports)
        assert sorted(values) == list(range(1, total + 1))
        assert await kv_of(backend).get("hits") == str(total)
