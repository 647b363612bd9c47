"""Opening the backend from URLs, pools, connections and SQLAlchemy engines, and its options."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import create_async_engine

import uwsx
from tests.integration.pg_servers import PgServer
from uwsx import _runtime
from uwsx.connect import installed_backends
from uwsx.errors import BackendError, Unavailable
from uwsx.ports.backend import Capability
from uwsx_postgres import PostgresBackend


def _prefix() -> str:
    return f"target-{_runtime.current().ids.hex(4)}:"


async def exercise(backend: PostgresBackend) -> None:
    """Every port once, including the dedicated LISTEN and session-lock connections."""
    kv, log = backend.kv, backend.log
    await kv.set("k", "v")
    assert await kv.get("k") == "v"
    assert (await log.append("l", "e", "{}", max_size=5)).seq == 1
    got: list[str] = []
    sub = await backend.pubsub.subscribe(["c"], lambda _c, m: got.append(m))
    await backend.pubsub.publish("c", "hello")
    for _ in range(200):
        if got:
            break
        await asyncio.sleep(0.01)
    assert got == ["hello"]
    await sub.close()
    lock = await backend.locks.try_session_lock("s")
    assert lock is not None
    assert await backend.locks.release_session_lock(lock)
    job = await backend.queue.enqueue("q", "{}")
    [claimed] = await backend.queue.claim("q", limit=1, visibility=30.0)
    assert claimed.id == job
    await kv.delete("k")
    await log.delete("l")
    await backend.queue.clear()


async def after_error(backend: PostgresBackend) -> None:
    """A failed statement leaves the caller's connection usable (rolled back, not aborted)."""
    await backend.kv.set("text", "not a number")
    with pytest.raises(BackendError):
        await backend.kv.incr("text")
    assert await backend.kv.get("text") == "not a number"
    await backend.kv.delete("text")


@contextlib.asynccontextmanager
async def opened(target: Any, **options: Any) -> AsyncIterator[PostgresBackend]:
    backend = await uwsx.connect(target, key_prefix=_prefix(), **options)
    assert isinstance(backend, PostgresBackend)
    try:
        yield backend
    finally:
        await backend.close()


async def test_caller_pool_is_used_and_left_open(pg_server: PgServer, pg_driver: str) -> None:
    if pg_driver == "asyncpg":
        pool = await asyncpg.create_pool(pg_server.url, min_size=1, max_size=4)
        try:
            async with opened(pool) as backend:
                assert backend.info["driver"] == "asyncpg"
                await exercise(backend)
            assert await pool.fetchval("SELECT 1") == 1, "the caller's pool stays open"
        finally:
            await pool.close()
        return
    ppool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        pg_server.url, min_size=1, max_size=4, open=False
    )
    await ppool.open(wait=True)
    try:
        async with opened(ppool) as backend:
            assert backend.info["driver"] == "psycopg"
            await exercise(backend)
        async with ppool.connection() as conn:
            assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
    finally:
        await ppool.close()


async def test_sqlalchemy_engine_is_shared(pg_server: PgServer, pg_driver: str) -> None:
    engine = create_async_engine(pg_server.url_for(pg_driver), pool_size=3)
    try:
        async with opened(engine) as backend:
            assert backend.info["driver"] == pg_driver
            await exercise(backend)
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
    finally:
        await engine.dispose()


async def test_caller_connection_is_used_and_left_open(pg_server: PgServer, pg_driver: str) -> None:
    if pg_driver == "asyncpg":
        conn = await asyncpg.connect(pg_server.url)
        try:
            async with opened(conn) as backend:
                await backend.kv.set("k", "v")
                both = await asyncio.gather(backend.kv.get("k"), backend.kv.get("k"))
                assert list(both) == ["v", "v"], "one connection serves concurrent calls in turn"
                with pytest.raises(Unavailable, match="dsn"):
                    await backend.pubsub.subscribe(["c"], lambda _c, _m: None)
            async with opened(conn, dsn=pg_server.url) as backend:
                await exercise(backend)
                await after_error(backend)
            assert not conn.is_closed()
        finally:
            await conn.close()
        return
    pconn = await psycopg.AsyncConnection.connect(pg_server.url)  # not autocommit
    try:
        async with opened(pconn) as backend:
            await exercise(backend)
            await backend.kv.set("seen", "yes")
            with psycopg.connect(pg_server.url) as other:
                row = other.execute(
                    "SELECT value FROM uwsx_kv WHERE key = %s", (backend.key_prefix + "seen",)
                ).fetchone()
            assert row == ("yes",), "writes through a caller's connection are committed"
            await backend.kv.delete("seen")
            await after_error(backend)
        assert not pconn.closed
    finally:
        await pconn.close()


async def test_plain_url_picks_a_driver(pg_server: PgServer, pg_driver: str) -> None:
    _, _, rest = pg_server.url.partition("://")
    async with opened(f"postgresql://{rest}") as backend:
        assert backend.info["driver"] == "asyncpg", "asyncpg first when both are installed"
    async with opened(f"postgres://{rest}", driver=pg_driver) as backend:
        assert backend.info["driver"] == pg_driver
        assert backend.info["version"].split(".")[0] == pg_server.version
    other = "psycopg" if pg_driver == "asyncpg" else "asyncpg"
    with pytest.raises(ValueError, match=f"asks for {pg_driver}"):
        await uwsx.connect(f"postgresql+{pg_driver}://{rest}", driver=other)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"pool_size": 3}, TypeError),
        ({"driver": "pg8000"}, ValueError),
        ({"pool_max_size": 0}, ValueError),
        ({"pool_min_size": 5, "pool_max_size": 2}, ValueError),
        ({"command_timeout": -1.0}, ValueError),
        ({"connect_timeout": None}, ValueError),
        ({"auto_migrate": "yes"}, TypeError),
    ],
)
async def test_bad_options_are_refused(pg_url: str, options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        await uwsx.connect(pg_url, **options)


async def test_url_credentials_are_redacted(pg_server: PgServer, pg_driver: str) -> None:
    _, _, rest = pg_server.url.partition("@")
    async with opened(f"postgresql+{pg_driver}://postgres:s3cret@{rest}") as backend:
        assert "s3cret" not in backend.url


def test_registered_with_its_capabilities() -> None:
    [entry] = [b for b in installed_backends() if b["name"] == "postgres"]
    assert entry["dist"] == "uwsx-postgres"
    assert set(entry["schemes"]) >= {"postgresql", "postgresql+asyncpg", "postgresql+psycopg"}
    assert set(entry["capabilities"]) == {Capability.DURABLE, Capability.SESSION_LOCKS}
