"""Behaviour specific to the Postgres adapter, beyond the port contract."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

import uwsx
from tests.integration.pg_servers import PgServer
from uwsx import _runtime
from uwsx.ports.queue import Job
from uwsx_postgres import MAX_NOTIFY_BYTES, PostgresBackend
from uwsx_postgres.pubsub import wire_channel


def _prefix() -> str:
    return f"pgx-{_runtime.current().ids.hex(4)}:"


@contextlib.asynccontextmanager
async def clients(url: str, count: int, **options: Any) -> AsyncIterator[list[PostgresBackend]]:
    prefix, opened = _prefix(), []
    try:
        for _ in range(count):
            backend = await uwsx.connect(url, key_prefix=prefix, **options)
            assert isinstance(backend, PostgresBackend)
            opened.append(backend)
        yield opened
    finally:
        for backend in opened:
            await backend.close()


def sql(server: PgServer, statement: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(server.url, autocommit=True) as conn:
        cur = conn.execute(statement, args)
        return cur.fetchall() if cur.description else []


async def test_seqs_are_64_bit(pg_server: PgServer, pg_url: str) -> None:
    """The original read seqs back as 32-bit ints; a counter past 2**31 must survive."""
    async with clients(pg_url, 1) as [backend]:
        log = backend.log
        await log.append("big", "e", "{}", max_size=3)
        big = 2**62
        sql(
            pg_server,
            "UPDATE uwsx_log_seq SET seq = %s, low = %s WHERE log = %s",
            big,
            big,
            backend.key_prefix + "big",
        )
        appended = [(await log.append("big", "e", f'"{i}"', max_size=3)).seq for i in range(4)]
        assert appended == [big + 1, big + 2, big + 3, big + 4]
        bounds = await log.bounds("big")
        assert (bounds.oldest, bounds.newest) == (big + 2, big + 4)
        assert [e.seq for e in await log.read_after("big", big + 2)] == [big + 3, big + 4]
        assert await log.read_after("big", 2**63 + 5) == [], "after beyond bigint is clamped"


async def test_bounds_epoch_changes_when_the_counter_is_recreated(pg_url: str) -> None:
    async with clients(pg_url, 1) as [backend]:
        await backend.log.append("ep", "e", "{}", max_size=3)
        first = (await backend.log.bounds("ep")).epoch
        await backend.log.delete("ep")
        await backend.log.append("ep", "e", "{}", max_size=3)
        assert (await backend.log.bounds("ep")).epoch != first


async def test_sweeper_deletes_expired_rows(pg_server: PgServer, pg_url: str) -> None:
    async with clients(pg_url, 1, sweep_interval=None) as [backend]:
        prefix = backend.key_prefix
        await backend.kv.set("gone", "v", ttl=0.05)
        await backend.kv.map_put("gone-map", "f", "v", ttl=0.05)
        await backend.kv.set("kept", "v")
        await backend.log.append("l", "e", "{}", max_size=5, ttl=0.05)
        await backend.stream.append_idempotent(
            "s", "e", "{}", producer_id="p", request_id="r", max_size=5, dedup_ttl=0.05
        )
        await backend.locks.acquire("lease", "me", ttl=0.05)

        def left() -> int:
            rows = sql(
                pg_server,
                "SELECT (SELECT count(*) FROM uwsx_kv WHERE starts_with(key, %s))"
                " + (SELECT count(*) FROM uwsx_log WHERE starts_with(log, %s))"
                " + (SELECT count(*) FROM uwsx_stream_prod WHERE starts_with(log, %s))"
                " + (SELECT count(*) FROM uwsx_stream_dedup WHERE starts_with(log, %s))"
                " + (SELECT count(*) FROM uwsx_locks WHERE starts_with(key, %s))",
                *[prefix] * 5,
            )
            return int(rows[0][0])

        assert left() == 7
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline:
            await backend.database.sweep_once()
            if left() == 1:
                break
            await asyncio.sleep(0.05)
        assert left() == 1, "only the key without TTL remains"
        assert await backend.kv.get("kept") == "v"
        assert (await backend.log.bounds("l")).newest == 1, "the counter is never swept"


async def test_trigger_notify_reaches_a_plain_channel(pg_server: PgServer, pg_driver: str) -> None:
    """A plain identifier channel is the Postgres channel itself: pg_notify from SQL (a
    trigger) reaches uwsx subscribers of that name."""
    channel = f"orders_{_runtime.current().ids.hex(4)}"
    backend = await uwsx.connect(pg_server.url_for(pg_driver))
    got: list[tuple[str, str]] = []
    try:
        await backend.pubsub.subscribe([channel], lambda c, m: got.append((c, m)))  # type: ignore[union-attr]
        sql(pg_server, "SELECT pg_notify(%s, %s)", channel, '{"id": 1}')
        for _ in range(500):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got == [(channel, '{"id": 1}')]
    finally:
        await backend.close()


def test_channel_mapping_is_safe_and_injective() -> None:
    assert wire_channel("orders") == "orders"
    assert wire_channel("Mixed_Case") == "Mixed_Case"
    odd = ['a"; NOTIFY x; --', "chat:room:1", "x" * 64, "ünï", "uwsx#abc", ""]
    wires = [wire_channel(c) for c in odd]
    assert all(w.startswith("uwsx#") and len(w) <= 63 and '"' not in w for w in wires)
    assert len(set(wires)) == len(odd)


async def test_notify_limits_are_checked_before_sending(pg_url: str) -> None:
    async with clients(pg_url, 1) as [backend]:
        ps = backend.pubsub
        assert ps.max_message_bytes == MAX_NOTIFY_BYTES == 7999
        with pytest.raises(ValueError, match="at most 7999"):
            await ps.publish("c", "x" * 8000)
        with pytest.raises(ValueError, match="NUL"):
            await ps.publish("c", "a\x00b")


async def test_publish_many_delivers_repeated_messages(pg_url: str) -> None:
    """Postgres folds identical notifications of one transaction; publish_many must not."""
    async with clients(pg_url, 1) as [backend]:
        got: list[str] = []
        await backend.pubsub.subscribe(["rep"], lambda _c, m: got.append(m))
        batch = [("rep", "same"), ("rep", "same"), ("rep", "other"), ("rep", "same")]
        await backend.pubsub.publish_many(batch)
        await backend.pubsub.publish("rep", "end")
        for _ in range(500):
            if "end" in got:
                break
            await asyncio.sleep(0.01)
        assert got == ["same", "same", "other", "same", "end"]


async def test_twenty_workers_on_separate_clients_never_share_a_job(pg_url: str) -> None:
    async with clients(pg_url, 20, pool_max_size=2) as workers:
        queue = workers[0].queue.space("uwsx_pgx_claims")
        ids = [await queue.enqueue("jobs", f'{{"i": {i}}}') for i in range(200)]
        handed: list[Job] = []

        async def work(backend: PostgresBackend) -> None:
            port = backend.queue.space("uwsx_pgx_claims")
            while jobs := await port.claim("jobs", limit=3, visibility=600.0):
                handed.extend(jobs)
                assert await port.complete([(j.id, j.token) for j in jobs]) == sorted(
                    (j.id for j in jobs), key=int
                )

        await asyncio.gather(*(work(w) for w in workers))
        counts = Counter(j.id for j in handed)
        assert [i for i, n in counts.items() if n > 1] == []
        assert sorted(counts, key=int) == ids


async def test_lost_claim_cannot_be_completed(pg_url: str) -> None:
    async with clients(pg_url, 2) as (old, new):
        q_old, q_new = old.queue.space("uwsx_pgx_claims"), new.queue.space("uwsx_pgx_claims")
        await q_old.enqueue("lost", "{}")
        [stale] = await q_old.claim("lost", limit=1, visibility=0.05)
        taken: list[Job] = []
        for _ in range(500):
            taken = await q_new.claim("lost", limit=1, visibility=600.0)
            if taken:
                break
            await asyncio.sleep(0.01)
        assert taken[0].id == stale.id
        assert await q_old.complete([(stale.id, stale.token)]) == []
        assert await q_old.extend([(stale.id, stale.token)], by=600.0) == []
        assert await q_new.complete([(taken[0].id, taken[0].token)]) == [stale.id]


async def test_injection_shaped_channels_are_delivered_by_name(pg_url: str) -> None:
    names = ['a"; UNLISTEN *; --', "b'); SELECT pg_notify('x', 'y", "room:1:ü", "Plain_Name"]
    async with clients(pg_url, 2) as (subscriber, publisher):
        got: list[tuple[str, str]] = []
        await subscriber.pubsub.subscribe(names, lambda c, m: got.append((c, m)))
        for name in names:
            await publisher.pubsub.publish(name, name)
        for _ in range(500):
            if len(got) == len(names):
                break
            await asyncio.sleep(0.01)
        assert got == [(n, n) for n in names]
