"""The declared schema, auto-migration and name validation, each in a fresh database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from sqlalchemy import MetaData, create_engine

import uwsx
from tests.integration.pg_servers import PgServer
from uwsx import _runtime
from uwsx.errors import BackendError, InvalidNameError
from uwsx_postgres import PostgresBackend
from uwsx_postgres.schema import add_space, metadata

#: Every relation of the public schema: columns (type, nullability, default, collation,
#: identity), index definitions and sequences.
_CATALOG = """
SELECT 'column', c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull::text,
       coalesce(pg_get_expr(d.adbin, d.adrelid), ''), coalesce(co.collname, ''), a.attidentity::text
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation AND co.collname <> 'default'
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
UNION ALL
SELECT 'index', c.relname, pg_get_indexdef(c.oid), '', '', '', '', ''
FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'i'
UNION ALL
SELECT 'sequence', c.relname, '', '', '', '', '', ''
FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S'
"""


def catalog(url: str) -> set[tuple[str, ...]]:
    with psycopg.connect(url) as conn:
        return {tuple(str(v) for v in row) for row in conn.execute(_CATALOG).fetchall()}


@contextlib.contextmanager
def fresh_database(server: PgServer) -> Iterator[str]:
    """A new, empty database on ``server`` (dropped afterwards); yields its plain URL."""
    name = f"uwsx_t_{_runtime.current().ids.hex(4)}"
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        pytest.fail(f"cannot create a test database on {server.url}: {exc}")
    base, _, _ = server.url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database(pg_server: PgServer) -> Iterator[str]:
    with fresh_database(pg_server) as url:
        yield url


def _uwsx_url(url: str, driver: str) -> str:
    return f"postgresql+{driver}://" + url.partition("://")[2]


@contextlib.asynccontextmanager
async def backend_on(url: str, driver: str, **options: object) -> AsyncIterator[PostgresBackend]:
    backend = await uwsx.connect(_uwsx_url(url, driver), key_prefix="schema:", **options)
    assert isinstance(backend, PostgresBackend)
    try:
        yield backend
    finally:
        await backend.close()


async def touch_every_port(
    backend: PostgresBackend, logs: str | None = None, jobs: str | None = None
) -> None:
    """Use each port once (log and stream in space ``logs``, queue in ``jobs``), creating its
    tables."""
    log, stream, queue = backend.log, backend.stream, backend.queue
    if logs is not None:
        log, stream = log.space(logs), stream.space(logs)
    if jobs is not None:
        queue = queue.space(jobs)
    await backend.kv.get("k")
    await backend.locks.holder("k")
    await log.bounds("l")
    await stream.bounds("l")
    await queue.pending()
    await queue.task_read("t")


def _create_all(md: MetaData, url: str) -> None:
    engine = create_engine("postgresql+psycopg://" + url.partition("://")[2])
    try:
        md.create_all(engine)
    finally:
        engine.dispose()


async def test_metadata_creates_exactly_what_auto_migration_creates(
    pg_server: PgServer, pg_driver: str
) -> None:
    with fresh_database(pg_server) as declared, fresh_database(pg_server) as migrated:
        _create_all(metadata, declared)
        async with backend_on(migrated, pg_driver) as backend:
            await touch_every_port(backend)
        expected = catalog(declared)
        assert {r[1] for r in expected if r[0] == "column"} >= {"uwsx_kv", "uwsx_queue_tasks"}
        assert catalog(migrated) == expected


async def test_add_space_declares_what_a_space_migrates(
    pg_server: PgServer, pg_driver: str
) -> None:
    md = MetaData()
    for kind, space in SPACES.items():
        add_space(md, kind, space)
    with fresh_database(pg_server) as declared, fresh_database(pg_server) as migrated:
        _create_all(md, declared)
        async with backend_on(migrated, pg_driver) as backend:
            await touch_every_port(backend, SPACES["log"], SPACES["queue"])
        spaced = {r for r in catalog(migrated) if r[1].startswith(("Audit_Trail", "Work_Queue"))}
        assert spaced
        assert spaced == catalog(declared) - {r for r in catalog(declared) if "uwsx_" in r[1]}


SPACES = {
    "kv": "uwsx_kv",
    "locks": "uwsx_locks",
    "log": "Audit_Trail",
    "stream": "Audit_Trail",
    "queue": "Work_Queue",
    "tasks": "Work_Queue",
}


async def test_one_space_name_for_log_and_queue_is_reported(database: str, pg_driver: str) -> None:
    """A log space and a queue space cannot share a name (one table each): the second use is
    refused with the table named, not a failing statement."""
    with pytest.raises(InvalidNameError, match="already declared"):
        add_space(add_space(MetaData(), "log", "shared").tables[0].metadata, "queue", "shared")
    async with backend_on(database, pg_driver) as backend:
        await backend.log.space("shared_space").append("l", "e", "{}", max_size=3)
        with pytest.raises(BackendError, match='existing table "shared_space" is missing'):
            await backend.queue.space("shared_space").enqueue("q", "{}")


async def test_existing_table_missing_columns_is_reported_every_time(
    database: str, pg_driver: str
) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute('CREATE TABLE uwsx_log (log text COLLATE "C", seq bigint)')
    for _ in range(2):
        async with backend_on(database, pg_driver) as backend:
            with pytest.raises(BackendError, match=r"missing column\(s\): event, data, created_at"):
                await backend.log.bounds("l")


async def test_existing_column_of_another_type_is_reported(database: str, pg_driver: str) -> None:
    _create_all(metadata, database)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("ALTER TABLE uwsx_kv ALTER COLUMN points TYPE integer")
    async with backend_on(database, pg_driver) as backend:
        with pytest.raises(BackendError, match="points is integer, expected bigint"):
            await backend.kv.get("k")


async def test_missing_tables_without_auto_migrate(database: str, pg_driver: str) -> None:
    async with backend_on(database, pg_driver, auto_migrate=False) as backend:
        with pytest.raises(BackendError, match="auto_migrate is off"):
            await backend.kv.set("k", "v")
    _create_all(metadata, database)
    async with backend_on(database, pg_driver, auto_migrate=False) as backend:
        await backend.kv.set("k", "v")
        assert await backend.kv.get("k") == "v"


async def test_concurrent_first_use_creates_tables_once(database: str, pg_driver: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(backend_on(database, pg_driver)) for _ in range(8)
        ]
        appended = await asyncio.gather(
            *(c.log.append("race", "e", "{}", max_size=100) for c in clients)
        )
        counted = await asyncio.gather(*(c.kv.incr("race") for c in clients))
    assert sorted(a.seq for a in appended) == list(range(1, 9))
    assert sorted(counted) == list(range(1, 9))


UNSAFE_SPACE_NAMES = [
    'x"; DROP TABLE uwsx_kv; --',
    "x; DROP TABLE uwsx_kv",
    "uwsx_log' OR '1'='1",
    "has space",
    "pg_catalog",
    "PG_temp",
    "information_schema_x",
    "ünïcode",
    "1starts_with_digit",
    "x" * 52,
]


async def test_unsafe_space_names_are_refused(pg_url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        backend = await uwsx.connect(pg_url, key_prefix=_runtime.current().ids.hex(4) + ":")
        stack.push_async_callback(backend.close)
        assert isinstance(backend, PostgresBackend)
        await backend.kv.set("canary", "alive")
        for name in UNSAFE_SPACE_NAMES:
            for port in (backend.log, backend.stream, backend.queue):
                with pytest.raises(InvalidNameError):
                    port.space(name)
        assert await backend.kv.get("canary") == "alive"


async def test_injection_shaped_keys_and_names_are_data(pg_url: str) -> None:
    nasty = "'); DROP TABLE uwsx_kv; -- \" $1 %s ?"
    prefix = f"nasty-{_runtime.current().ids.hex(4)}:"
    backend = await uwsx.connect(pg_url, key_prefix=prefix)
    assert isinstance(backend, PostgresBackend)
    try:
        await backend.kv.set(nasty, nasty)
        await backend.kv.map_put(nasty + "m", nasty, nasty, prefix=nasty)
        await backend.log.append(nasty, nasty, nasty, max_size=5)
        await backend.queue.enqueue(nasty, nasty, request_id=nasty)
        assert await backend.kv.get(nasty) == nasty
        assert await backend.kv.map_items(nasty + "m") == {nasty: nasty}
        [entry] = await backend.log.read_after(nasty, 0)
        assert (entry.event, entry.data) == (nasty, nasty)
        [job] = await backend.queue.claim(nasty, limit=1, visibility=60.0)
        assert (job.payload, job.request_id) == (nasty, nasty)
        assert await backend.kv.delete_prefix("'") == 2
        assert await backend.log.delete_prefix("'") == 1
        assert await backend.queue.clear(nasty) == 1
    finally:
        await backend.close()
