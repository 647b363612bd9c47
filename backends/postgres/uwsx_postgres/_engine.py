"""Borrow connections from a SQLAlchemy ``AsyncEngine`` so uwsx shares the application's pool.

Each acquisition checks out an engine connection and hands the driver shim the underlying
asyncpg or psycopg connection; releasing closes the engine connection, which returns it to the
engine's pool (SQLAlchemy rolls back anything left open). A connection the shim found dead is
invalidated so the pool replaces it.

``acquire`` / ``getconn`` honour their ``timeout`` (the backend passes ``connect_timeout``) on
top of the engine's own ``pool_timeout``, so an exhausted engine pool ends in ``Unavailable``
within ``connect_timeout``. A checkout given up that way leaves nothing checked out:
SQLAlchemy hands back a connection whose checkout is interrupted.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["EnginePool", "engine_driver", "engine_dsn"]


def engine_driver(engine: Any) -> str:
    """``asyncpg`` or ``psycopg``: the DBAPI driver the engine was created with."""
    name = str(engine.dialect.driver)
    if name not in ("asyncpg", "psycopg"):
        raise ValueError(
            f"uwsx postgres needs an engine on postgresql+asyncpg or postgresql+psycopg, "
            f"got driver {name!r}"
        )
    return name


def engine_dsn(engine: Any) -> str:
    """A libpq/asyncpg connection URL for the engine's database (for dedicated sessions)."""
    url = engine.url.set(drivername="postgresql")
    return str(url.render_as_string(hide_password=False))


class EnginePool:
    """The slice of the asyncpg-pool and psycopg-pool APIs the shims use, over an engine."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._held: dict[int, Any] = {}
        self.max_size = int(getattr(engine.pool, "size", lambda: 5)()) + 1

    async def _checkout(self) -> Any:
        conn = await self._engine.connect()
        try:
            raw = await conn.get_raw_connection()
            driver_conn = raw.driver_connection
        except BaseException:
            await conn.close()
            raise
        self._held[id(driver_conn)] = conn
        return driver_conn

    async def _return(self, driver_conn: Any, *, dead: bool) -> None:
        conn = self._held.pop(id(driver_conn), None)
        if conn is None:
            return
        if dead:
            await conn.invalidate()
        await conn.close()

    # asyncpg Pool API
    async def acquire(self, timeout: float | None = None) -> Any:
        async with asyncio.timeout(timeout):
            return await self._checkout()

    async def release(self, driver_conn: Any, timeout: float | None = None) -> None:
        await self._return(driver_conn, dead=bool(driver_conn.is_closed()))

    # psycopg AsyncConnectionPool API
    async def getconn(self, timeout: float | None = None) -> Any:
        async with asyncio.timeout(timeout):
            return await self._checkout()

    async def putconn(self, driver_conn: Any) -> None:
        await self._return(driver_conn, dead=bool(driver_conn.closed or driver_conn.broken))
