"""Helpers of the Postgres driver shims that need no server (regressions from a review)."""

from __future__ import annotations

from typing import Any

import pytest

asyncpg = pytest.importorskip("asyncpg")
pytest.importorskip("psycopg_pool")

from uwsx_postgres._driver_asyncpg import _is_closed  # noqa: E402
from uwsx_postgres._driver_psycopg import _drop  # noqa: E402


class _Detached:
    """An asyncpg pool proxy after asyncpg released it: every method raises."""

    def is_closed(self) -> bool:
        raise asyncpg.InterfaceError("connection has been released back to the pool")


class _Open:
    def is_closed(self) -> bool:
        return False


def test_a_detached_pool_proxy_counts_as_closed() -> None:
    assert _is_closed(_Detached())
    assert not _is_closed(_Open())


class _PgConn:
    def __init__(self) -> None:
        self.finished = False

    def finish(self) -> None:
        self.finished = True


class _Conn:
    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.pgconn = _PgConn()
        self.closed_by_close = False

    async def close(self) -> None:
        # With close_returns=True this would hand the connection back to its pool.
        self.closed_by_close = True


async def test_drop_closes_a_pooled_connection_without_returning_it() -> None:
    pooled = _Conn(pool=object())
    await _drop(pooled)
    assert pooled.pgconn.finished
    assert not pooled.closed_by_close


async def test_drop_closes_a_connection_of_no_pool() -> None:
    single = _Conn(pool=None)
    await _drop(single)
    assert single.closed_by_close
    assert not single.pgconn.finished
