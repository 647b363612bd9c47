"""uwsx-postgres: every uwsx storage port on PostgreSQL, with asyncpg or psycopg 3.

``uwsx.connect("postgresql+asyncpg://...")`` (or ``postgresql+psycopg://``) returns a
:class:`PostgresBackend`; :data:`uwsx_postgres.schema.metadata` declares its tables for Alembic.
"""

from __future__ import annotations

from uwsx_postgres.backend import CAPABILITIES, PostgresBackend, open_backend
from uwsx_postgres.kv import PostgresKV
from uwsx_postgres.locks import PostgresLocks
from uwsx_postgres.logs import PostgresSortedLog, PostgresStream
from uwsx_postgres.pubsub import MAX_NOTIFY_BYTES, PostgresPubSub
from uwsx_postgres.queue import PostgresQueue

__all__ = [
    "CAPABILITIES",
    "MAX_NOTIFY_BYTES",
    "PostgresBackend",
    "PostgresKV",
    "PostgresLocks",
    "PostgresPubSub",
    "PostgresQueue",
    "PostgresSortedLog",
    "PostgresStream",
    "open_backend",
]
