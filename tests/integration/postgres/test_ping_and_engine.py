"""The LISTEN health ping notices a silent connection, and a caller's engine bounds its waits.

* With ``command_timeout=None`` a half-open LISTEN connection (modelled by freezing its relay
  pipe: no data, no EOF) must still be noticed by the health ping: the subscription reconnects,
  LISTENs again and reports a loss window covering the silence, and delivery resumes.
* A SQLAlchemy ``AsyncEngine`` whose pool is exhausted must not hold an operation for the
  engine's ``pool_timeout``: ``connect_timeout`` bounds the wait, which ends in ``Unavailable``,
  and handing connections back (also when cancelled) leaves none checked out.

Every wait is bounded by ``WAIT``, far shorter than the waits a regression would fall into
(no ping bound at all, ``pool_timeout=600``), so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

import uwsx
from tests.helpers import eventually
from tests.integration.pg_servers import PgServer
from tests.integration.postgres.relay import relay_to
from uwsx import _runtime
from uwsx.errors import Unavailable
from uwsx.ports.pubsub import LossWindow
from uwsx_postgres import PostgresBackend
from uwsx_postgres._engine import EnginePool

T = TypeVar("T")

WAIT = 30.0


def bounded(aw: Awaitable[T]) -> Awaitable[T]:
    return asyncio.wait_for(aw, WAIT)


async def until(probe: Callable[[], bool], what: str) -> None:
    await eventually(probe, timeout=WAIT, what=what)


async def connect(target: object, prefix: str, **options: Any) -> PostgresBackend:
    backend = await uwsx.connect(target, key_prefix=prefix, **options)
    assert isinstance(backend, PostgresBackend)
    return backend


def checked_out(engine: AsyncEngine) -> int:
    """Connections the engine's pool has handed out and not got back."""
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


def _prefix() -> str:
    return f"ping-{_runtime.current().ids.hex(4)}:"


# -- the LISTEN health ping -----------------------------------------------------------------


async def test_unanswered_ping_is_a_lost_connection(pg15: PgServer, pg_driver: str) -> None:
    """``command_timeout=None``: the LISTEN connection goes silent (frozen relay pipe); the ping
    gives up after its own bound, the subscription re-LISTENs on a new connection, ``on_loss``
    gets a window that covers the silence, and messages flow again."""
    prefix = _prefix()
    async with relay_to(pg15.url_for(pg_driver)) as (relay, url):
        backend = await connect(
            url, prefix, command_timeout=None, ping_interval=0.5, pool_min_size=1
        )
        publisher = await connect(pg15.url_for(pg_driver), prefix)
        try:
            got: list[str] = []
            losses: list[LossWindow] = []
            before = set(relay.pipes)
            sub = await backend.pubsub.subscribe(
                ["news"], lambda _c, m: got.append(m), on_loss=losses.append
            )
            [listen_pipe] = [p for p in relay.open_pipes() if p not in before]
            await publisher.pubsub.publish("news", "before")
            await until(lambda: "before" in got, "delivery before the silence")

            silent_from = _runtime.current().clock.wall()
            listen_pipe.freeze()
            await publisher.pubsub.publish("news", "during")
            await until(lambda: bool(losses) and sub.healthy, "re-LISTEN and on_loss")
            [window] = losses
            # Messages published once the connection went silent fall inside the window.
            assert window.started <= silent_from <= window.ended

            await publisher.pubsub.publish("news", "after")
            await until(lambda: "after" in got, "delivery after the reconnect")
            assert "during" not in got
        finally:
            await bounded(backend.close())
            await bounded(publisher.close())


# -- a caller's AsyncEngine -------------------------------------------------------------------


async def test_exhausted_engine_pool_is_bounded_by_connect_timeout(
    pg15: PgServer, pg_driver: str
) -> None:
    """The engine's only connection is held by the application and its ``pool_timeout`` is
    long: an operation ends in ``Unavailable`` after ``connect_timeout``, leaves nothing
    checked out, and works again once the connection is back."""
    engine = create_async_engine(
        pg15.url_for(pg_driver), pool_size=1, max_overflow=0, pool_timeout=600
    )
    try:
        backend = await connect(engine, _prefix(), connect_timeout=0.5, ping_interval=600.0)
        try:
            async with engine.connect():
                with pytest.raises(Unavailable):
                    await bounded(backend.pubsub.publish("c", "m"))
                assert checked_out(engine) == 1  # only the application's
            await bounded(backend.pubsub.publish("c", "m"))
            assert checked_out(engine) == 0
        finally:
            await bounded(backend.close())
    finally:
        await engine.dispose()


@pytest.mark.parametrize("dead", [True, False], ids=["dead", "alive"])
async def test_cancelled_return_leaves_nothing_checked_out(
    pg15: PgServer, pg_driver: str, dead: bool
) -> None:
    """Handing a connection back is cancelled while the server does not answer (frozen relay
    pipe: asyncpg waits there for its goodbye, SQLAlchemy for its reset): the engine's slot
    is free afterwards."""
    async with relay_to(pg15.url_for(pg_driver)) as (relay, url):
        if pg_driver == "asyncpg":  # SQLAlchemy passes query arguments to asyncpg.connect
            url = url.replace("sslmode=", "ssl=")
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=600)
        try:
            pool = EnginePool(engine)
            driver_conn = await bounded(
                pool.acquire() if pg_driver == "asyncpg" else pool.getconn()
            )
            [pipe] = relay.open_pipes()
            pipe.freeze()
            returning = asyncio.ensure_future(pool._return(driver_conn, dead=dead))
            # Either the hand-back is stuck on the frozen connection (cancel it there) or it
            # did no I/O and is already done; both must end with the slot free.
            held = asyncio.ensure_future(pipe.holding.wait())
            done, _ = await asyncio.wait(
                {returning, held}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED
            )
            held.cancel()
            assert done, "neither the hand-back nor traffic on the frozen connection"
            returning.cancel()
            await asyncio.gather(returning, held, return_exceptions=True)
            assert checked_out(engine) == 0
        finally:
            # A connection handed back without I/O is still frozen: end it so dispose can.
            for p in relay.pipes:
                p.close()
            await bounded(engine.dispose())
