"""The database handle every port shares: the driver, migrations and the expiry sweeper.

Expired rows are ignored by every read (each statement compares deadlines with the database
clock), so
the sweeper only reclaims space: every ``sweep_interval`` seconds it runs the cleanup of each
table set this backend has used, in batches, logging (never raising) failures.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from uwsx import _runtime
from uwsx.errors import BackendError
from uwsx_postgres._driver import Driver, Executor, Row
from uwsx_postgres.migrate import Migrator
from uwsx_postgres.schema import TableSet

__all__ = ["Database", "Sweep"]

log = logging.getLogger("uwsx.postgres")

#: A cleanup step: delete up to ``batch`` dead rows, return how many it deleted.
Sweep = Callable[["Database", int], Awaitable[int]]

_BATCH = 500


class Database:
    """Shared by the ports of one backend."""

    def __init__(self, driver: Driver, *, auto_migrate: bool, sweep_interval: float | None) -> None:
        self.driver = driver
        self.migrator = Migrator(driver, auto_migrate=auto_migrate)
        self._sweeps: dict[str, Sweep] = {}
        self._interval = sweep_interval
        self._tasks = _runtime.current().task_group("uwsx-postgres")
        self._sweeper_started = False
        self.closed = False

    async def fetch(self, sql: str, *args: object, write: bool = True) -> list[Row]:
        if self.closed:
            raise BackendError("the postgres backend is closed")
        return await self.driver.fetch(sql, args, write=write)

    async def fetchrow(self, sql: str, *args: object, write: bool = True) -> Row | None:
        rows = await self.fetch(sql, *args, write=write)
        return rows[0] if rows else None

    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        if self.closed:
            raise BackendError("the postgres backend is closed")
        return self.driver.transaction()

    async def ensure(self, ts: TableSet, sweep: Sweep | None = None) -> None:
        """Make sure ``ts`` exists (see :mod:`uwsx_postgres.migrate`) and register its
        cleanup with the sweeper."""
        if self.migrator.ready(ts):
            return
        await self.migrator.ensure(ts)
        if sweep is not None:
            self._sweeps[ts.key] = sweep
            self._start_sweeper()

    def _start_sweeper(self) -> None:
        if self._sweeper_started or not self._interval or self.closed:
            return
        self._sweeper_started = True
        self._tasks.spawn(self._sweep_loop(self._interval), name="uwsx-postgres-sweeper")

    async def _sweep_loop(self, interval: float) -> None:
        clock = _runtime.current().clock
        while not self.closed:
            await clock.sleep(interval)
            await self.sweep_once()

    async def sweep_once(self) -> int:
        """Run every registered cleanup to completion; returns the rows deleted."""
        total = 0
        for key, sweep in list(self._sweeps.items()):
            try:
                while True:
                    deleted = await sweep(self, _BATCH)
                    total += deleted
                    if deleted < _BATCH:
                        break
            except BackendError as exc:
                log.warning("uwsx postgres: sweeping %s failed: %s", key, exc)
        return total

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self._tasks.aclose()
