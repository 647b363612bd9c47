"""``PostgresBackend`` and its factory: every port on one PostgreSQL database.

Open it with a URL (``postgresql+asyncpg://``, ``postgresql+psycopg://``, or ``postgresql://`` /
``postgres://`` with whichever driver is installed, asyncpg first) or with an existing asyncpg
pool or connection, psycopg pool or connection, or SQLAlchemy ``AsyncEngine``. A pool, engine or
connection passed in stays the caller's: ``close()`` does not close it.

Options (keyword arguments of :func:`uwsx.connect`):

``auto_migrate`` (True)        create missing uwsx tables on first use (always verified)
``driver`` (None)              ``"asyncpg"`` or ``"psycopg"`` for a plain ``postgresql://`` URL
``pool_min_size`` (1) / ``pool_max_size`` (10)   the owned pool's bounds
``command_timeout`` (30.0)     seconds before a statement is abandoned (Indeterminate)
``connect_timeout`` (10.0)     seconds to get a connection before Unavailable (also bounds
                               handing one back and closing the pool)
``sweep_interval`` (60.0)      seconds between deletions of expired rows (None: never)
``dsn`` (None)                 connection URL for the dedicated LISTEN / session-lock
                               connections when a pool, engine or connection is passed
``ping_interval`` (10.0)       seconds between health checks of the LISTEN connection; one
                               not answered within as long counts as a lost connection
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from uwsx.ports.backend import Capability
from uwsx.redact import redact_url
from uwsx_postgres._db import Database
from uwsx_postgres._driver import Driver
from uwsx_postgres.kv import PostgresKV
from uwsx_postgres.locks import PostgresLocks
from uwsx_postgres.logs import PostgresSortedLog, PostgresStream
from uwsx_postgres.pubsub import PostgresPubSub
from uwsx_postgres.queue import PostgresQueue

__all__ = ["CAPABILITIES", "PostgresBackend", "open_backend"]

#: Durable tables and advisory locks; no sharded channels, no server functions, no replica
#: waits, and no key-expiry events (Postgres has no expiry to observe).
CAPABILITIES = frozenset({Capability.DURABLE, Capability.SESSION_LOCKS})

_SCHEMES = {
    "postgres": None,
    "postgresql": None,
    "postgresql+asyncpg": "asyncpg",
    "postgresql+psycopg": "psycopg",
}
_DEFAULTS: dict[str, Any] = {
    "auto_migrate": True,
    "driver": None,
    "pool_min_size": 1,
    "pool_max_size": 10,
    "command_timeout": 30.0,
    "connect_timeout": 10.0,
    "sweep_interval": 60.0,
    "dsn": None,
    "ping_interval": 10.0,
}


class PostgresBackend:
    """The six ports over one database; ``close()`` releases every connection it opened."""

    def __init__(
        self, driver: Driver, db: Database, *, url: str, key_prefix: str, ping_interval: float
    ) -> None:
        self._driver = driver
        self._db = db
        self._url = url
        self._prefix = key_prefix
        self._kv = PostgresKV(db, key_prefix)
        self._log = PostgresSortedLog(db, key_prefix)
        self._stream = PostgresStream(db, key_prefix)
        self._pubsub = PostgresPubSub(driver, key_prefix, ping_interval=ping_interval)
        self._locks = PostgresLocks(db, key_prefix)
        self._queue = PostgresQueue(db, key_prefix)
        self._closed = False

    @property
    def name(self) -> str:
        return "postgres"

    @property
    def url(self) -> str:
        return self._url

    @property
    def key_prefix(self) -> str:
        return self._prefix

    @property
    def capabilities(self) -> frozenset[Capability]:
        return CAPABILITIES

    @property
    def info(self) -> Mapping[str, str]:
        return {
            "server": "postgresql",
            "version": self._driver.server_version,
            "driver": self._driver.name,
            "mode": "standalone",
        }

    @property
    def kv(self) -> PostgresKV:
        return self._kv

    @property
    def log(self) -> PostgresSortedLog:
        return self._log

    @property
    def stream(self) -> PostgresStream:
        return self._stream

    @property
    def pubsub(self) -> PostgresPubSub:
        return self._pubsub

    @property
    def locks(self) -> PostgresLocks:
        return self._locks

    @property
    def queue(self) -> PostgresQueue:
        return self._queue

    @property
    def functions(self) -> None:
        return None

    @property
    def database(self) -> Database:
        """The shared handle (tests run the sweeper through it)."""
        return self._db

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._pubsub.close()
            await self._locks.close()
            await self._db.close()
        finally:
            await self._driver.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected options for the postgres backend: {sorted(unknown)}")
    opts = {**_DEFAULTS, **options}
    for name in ("pool_min_size", "pool_max_size"):
        value = opts[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < (0 if "min" in name else 1)
        ):
            raise ValueError(
                f"{name} must be a {'non-negative' if 'min' in name else 'positive'} int"
            )
    if opts["pool_min_size"] > opts["pool_max_size"]:
        raise ValueError("pool_min_size must not exceed pool_max_size")
    for name in ("command_timeout", "connect_timeout", "sweep_interval", "ping_interval"):
        value = opts[name]
        if value is None and name in ("command_timeout", "sweep_interval"):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds")
    if opts["driver"] not in (None, "asyncpg", "psycopg"):
        raise ValueError(f"driver must be 'asyncpg' or 'psycopg', got {opts['driver']!r}")
    if not isinstance(opts["auto_migrate"], bool):
        raise TypeError("auto_migrate must be a bool")
    return opts


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _pick(scheme_driver: str | None, wanted: str | None) -> str:
    if scheme_driver and wanted and scheme_driver != wanted:
        raise ValueError(f"the URL asks for {scheme_driver} but driver={wanted!r} was given")
    choice = scheme_driver or wanted
    if choice is None:
        choice = "asyncpg" if _installed("asyncpg") else "psycopg"
    module = "psycopg_pool" if choice == "psycopg" else "asyncpg"
    if not _installed(module):
        from uwsx.errors import UnsupportedBackendError

        raise UnsupportedBackendError(
            f"the postgres backend needs {choice}: pip install 'uwsx-postgres[{choice}]'"
        )
    return choice


async def _open_url(url: str, opts: dict[str, Any]) -> Driver:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"not a PostgreSQL URL: {redact_url(url)!r}")
    choice = _pick(_SCHEMES[scheme], opts["driver"])
    dsn = "postgresql" + url[len(scheme) :]
    args = {
        "min_size": opts["pool_min_size"],
        "max_size": opts["pool_max_size"],
        "command_timeout": opts["command_timeout"],
        "connect_timeout": opts["connect_timeout"],
    }
    if choice == "asyncpg":
        from uwsx_postgres._driver_asyncpg import AsyncpgDriver

        return await AsyncpgDriver.connect(dsn, **args)
    from uwsx_postgres._driver_psycopg import PsycopgDriver

    return await PsycopgDriver.connect(dsn, **args)


def _wrap(target: Any, opts: dict[str, Any]) -> tuple[Driver, str]:
    """A driver over the caller's pool, connection or engine (not owned), and its label."""
    timing = {
        "command_timeout": opts["command_timeout"],
        "connect_timeout": opts["connect_timeout"],
    }
    names: set[str] = {f"{c.__module__}.{c.__qualname__}" for c in type(target).__mro__}
    dsn: str | None = opts["dsn"]
    label = f"postgresql (caller's {type(target).__name__})"
    if "sqlalchemy.ext.asyncio.engine.AsyncEngine" in names:
        from uwsx_postgres._engine import EnginePool, engine_driver, engine_dsn

        kind = engine_driver(target)
        dsn = dsn or engine_dsn(target)
        label = redact_url(dsn)
        target, names = EnginePool(target), {f"{kind}-engine"}
    if names & {"asyncpg.pool.Pool", "asyncpg-engine"}:
        from uwsx_postgres._driver_asyncpg import AsyncpgDriver

        return AsyncpgDriver(pool=target, owns=False, dsn=dsn, **timing), label
    if "asyncpg.connection.Connection" in names:
        from uwsx_postgres._driver_asyncpg import AsyncpgDriver

        return AsyncpgDriver(conn=target, owns=False, dsn=dsn, **timing), label
    if names & {"psycopg_pool.pool_async.AsyncConnectionPool", "psycopg-engine"}:
        from uwsx_postgres._driver_psycopg import PsycopgDriver

        conninfo, kwargs = getattr(target, "conninfo", None), getattr(target, "kwargs", None)
        if dsn is None and isinstance(conninfo, str):
            dsn = conninfo
        extra = kwargs if isinstance(kwargs, dict) else None
        driver = PsycopgDriver(pool=target, owns=False, dsn=dsn, connect_kwargs=extra, **timing)
        return driver, label
    if "psycopg.AsyncConnection" in names:
        from psycopg.conninfo import make_conninfo

        from uwsx_postgres._driver_psycopg import PsycopgDriver

        info = target.info
        dsn = dsn or make_conninfo(info.dsn, password=info.password or None)
        return PsycopgDriver(conn=target, owns=False, dsn=dsn, **timing), label
    raise TypeError(
        "the postgres backend opens URLs, asyncpg/psycopg pools and connections and "
        f"SQLAlchemy AsyncEngines, not {type(target).__name__}"
    )


async def open_backend(target: object, *, key_prefix: str = "", **options: Any) -> PostgresBackend:
    """Factory registered for the ``postgres*`` schemes (see the module docstring).

    :raises Unavailable: the server cannot be reached.
    :raises UnsupportedBackendError: the needed driver is not installed.
    """
    opts = _options(options)
    driver: Driver
    if isinstance(target, str):
        driver, label = await _open_url(target, opts), redact_url(target)
    else:
        driver, label = _wrap(target, opts)
        await driver.probe()
    db = Database(driver, auto_migrate=opts["auto_migrate"], sweep_interval=opts["sweep_interval"])
    return PostgresBackend(
        driver, db, url=label, key_prefix=key_prefix, ping_interval=opts["ping_interval"]
    )
