"""Registers the Postgres backend (entry point ``postgres`` in the ``uwsx`` group).

Imports nothing heavy: the drivers load when a ``postgresql://`` URL (or a driver object) is
opened.
"""

from __future__ import annotations

from uwsx.hookspecs import hookimpl
from uwsx.ports.backend import Capability
from uwsx.registry import BackendRegistry, BackendSpec

#: Driver objects ``uwsx.connect`` accepts instead of a URL.
CLIENT_TYPES = (
    "asyncpg.pool.Pool",
    "asyncpg.connection.Connection",
    "psycopg_pool.pool_async.AsyncConnectionPool",
    "psycopg.AsyncConnection",
    "sqlalchemy.ext.asyncio.engine.AsyncEngine",
)


@hookimpl
def uwsx_register_backends(registry: BackendRegistry) -> None:
    registry.register(
        BackendSpec(
            name="postgres",
            schemes=("postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg"),
            factory="uwsx_postgres.backend:open_backend",
            dist="uwsx-postgres",
            capabilities=frozenset({Capability.DURABLE, Capability.SESSION_LOCKS}),
            client_types=CLIENT_TYPES,
            install_hint="pip install 'uwsx-postgres[asyncpg]' (or [psycopg])",
            description="PostgreSQL 13+ tables, LISTEN/NOTIFY and advisory locks, with asyncpg "
            "or psycopg 3",
        )
    )
