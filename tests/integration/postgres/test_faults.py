"""Faults on a real server: restarts, terminated sessions, in-flight operations.

Restart tests run on a private throwaway cluster per test (stopping the shared one would break
other tests). Every wait is bounded: an operation that hangs fails the test instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest

import uwsx
from tests.integration.pg_servers import VERSIONS, PgServer, throwaway_cluster
from uwsx.errors import Indeterminate, Unavailable
from uwsx.ports.pubsub import LossWindow
from uwsx_postgres import PostgresBackend

T = TypeVar("T")

#: Bound on anything a test waits for.
WAIT = 20.0
#: Short timeouts so operations against a stopped server fail fast.
FAST: dict[str, Any] = {"connect_timeout": 2.0, "command_timeout": 5.0, "ping_interval": 1.0}

Opener = Callable[..., Awaitable[PostgresBackend]]


async def eventually(probe: Callable[[], Awaitable[T]], until: Callable[[T], bool], what: str) -> T:
    """Poll ``probe`` (Unavailable / Indeterminate count as "not yet") until ``until`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    last: object = None
    while loop.time() < deadline:
        try:
            value = await probe()
        except (Unavailable, Indeterminate) as exc:
            last = exc
        else:
            if until(value):
                return value
            last = value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {WAIT:g} s waiting for {what}; last: {last!r}")


async def condition(fn: Callable[[], bool], what: str) -> None:
    async def probe() -> bool:
        return fn()

    await eventually(probe, bool, what)


@pytest.fixture(params=VERSIONS, ids=lambda v: f"pg{v}")
def private_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    with throwaway_cluster(str(request.param)) as server:
        yield server


@pytest.fixture
async def opener(pg_driver: str) -> AsyncIterator[Opener]:
    opened: list[PostgresBackend] = []

    async def open_(server: PgServer, **options: Any) -> PostgresBackend:
        backend = await uwsx.connect(
            server.url_for(pg_driver), key_prefix="faults:", **{**FAST, **options}
        )
        assert isinstance(backend, PostgresBackend)
        opened.append(backend)
        return backend

    yield open_
    for backend in opened:
        await backend.close()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.losses: list[LossWindow] = []

    def __call__(self, channel: str, message: str) -> None:
        self.messages.append(message)

    async def delivered(self, publisher: PostgresBackend, channel: str, text: str) -> None:
        """Publish ``text`` until it arrives (messages sent while re-LISTENing are lost)."""

        async def probe() -> bool:
            if text not in self.messages:
                await publisher.pubsub.publish(channel, text)
                await asyncio.sleep(0.05)
            return text in self.messages

        await eventually(probe, bool, f"delivery of {text!r}")


async def test_restart_is_survived(private_server: PgServer, opener: Opener) -> None:
    """During the outage operations end in Unavailable/Indeterminate (never hang); afterwards
    the backend reconnects, LISTEN is re-established, on_loss reports the window and the
    session lock is known to be gone."""
    backend, publisher = await opener(private_server), await opener(private_server)
    await backend.kv.set("k", "before")
    inbox = Inbox()
    sub = await backend.pubsub.subscribe(["news"], inbox, on_loss=inbox.losses.append)
    lock = await backend.locks.try_session_lock("leader")
    assert lock is not None

    private_server.stop()
    for _ in range(2):
        with pytest.raises((Unavailable, Indeterminate)):
            await asyncio.wait_for(backend.kv.get("k"), WAIT)
    with pytest.raises((Unavailable, Indeterminate)):
        await asyncio.wait_for(publisher.pubsub.publish("news", "lost"), WAIT)
    await condition(lambda: not sub.healthy, "the subscription to turn unhealthy")
    assert not await backend.locks.session_lock_held(lock)

    private_server.start()
    assert await eventually(lambda: backend.kv.get("k"), lambda v: v == "before", "reconnect")
    await condition(lambda: bool(inbox.losses) and sub.healthy, "re-LISTEN and on_loss")
    [window] = inbox.losses
    assert window.started <= window.ended
    await inbox.delivered(publisher, "news", "after")
    assert "lost" not in inbox.messages
    again = await backend.locks.try_session_lock("leader")
    assert again is not None
    assert again.session != lock.session
    assert again.fence > lock.fence


async def test_in_flight_write_ends_indeterminate(private_server: PgServer, opener: Opener) -> None:
    """A write waiting on the server when it goes down ends Indeterminate (it was sent), and
    the next operation after the restart works."""
    backend = await opener(private_server)
    await backend.kv.set("k", "v")
    blocker = await psycopg.AsyncConnection.connect(private_server.url, autocommit=True)
    try:
        # Hold the row lock so the write below stays in flight on the server.
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT 1 FROM uwsx_kv WHERE key = 'faults:k' FOR UPDATE")
        write = asyncio.ensure_future(backend.kv.set("k", "w"))
        await condition(lambda: _waiting(private_server) > 0, "the write to wait on the lock")
        # Immediate, not fast: a fast shutdown sometimes ends the blocker's transaction first,
        # and the write then takes the row lock and commits before its own session ends. The
        # checkpoint keeps what was committed (the cluster runs with synchronous_commit=off).
        _checkpoint(private_server)
        private_server.stop(mode="immediate")
        with pytest.raises(Indeterminate):
            await asyncio.wait_for(write, WAIT)
    finally:
        await blocker.close()
    private_server.start()
    assert await eventually(lambda: backend.kv.get("k"), lambda v: v == "v", "reconnect")


def _checkpoint(server: PgServer) -> None:
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def _waiting(server: PgServer) -> int:
    with psycopg.connect(server.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND application_name = 'uwsx'"
        ).fetchone()
    return int(row[0]) if row else 0


async def test_server_that_never_answers_is_unavailable(pg_driver: str) -> None:
    from tests.integration.harness import free_port

    url = f"postgresql+{pg_driver}://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(Unavailable):
        await asyncio.wait_for(uwsx.connect(url, connect_timeout=2.0), WAIT)


async def test_terminated_listener_relistens(pg_server: PgServer, opener: Opener) -> None:
    """``pg_terminate_backend`` on the LISTEN session: re-LISTEN, then on_loss, then delivery."""
    backend, publisher = await opener(pg_server), await opener(pg_server)
    inbox = Inbox()
    sub = await backend.pubsub.subscribe(["terminated"], inbox, on_loss=inbox.losses.append)
    await inbox.delivered(publisher, "terminated", "before")
    assert len(_terminate(pg_server, "LISTEN %")) == 1
    await condition(lambda: bool(inbox.losses) and sub.healthy, "re-LISTEN and on_loss")
    await inbox.delivered(publisher, "terminated", "after")


async def test_terminated_session_releases_session_lock(
    pg_server: PgServer, opener: Opener
) -> None:
    backend, other = await opener(pg_server), await opener(pg_server)
    lock = await backend.locks.try_session_lock("terminated-lock")
    assert lock is not None
    assert await other.locks.try_session_lock("terminated-lock") is None
    assert _terminate(pg_server, "%pg_try_advisory_lock%")
    await eventually(
        lambda: backend.locks.session_lock_held(lock), lambda held: not held, "the lock's loss"
    )
    taken = await eventually(
        lambda: other.locks.try_session_lock("terminated-lock"),
        lambda got: got is not None,
        "the lock to be free",
    )
    assert taken is not None
    assert taken.fence > lock.fence


async def test_terminated_pool_connections_are_replaced(
    pg_server: PgServer, opener: Opener
) -> None:
    """Idle pooled connections killed by the server are noticed before use: the next
    operation runs on a fresh connection instead of failing."""
    backend = await opener(pg_server)
    await backend.kv.set("pool", "1")
    pids = _terminate(pg_server, "%")
    assert pids
    # Probe without blocking the loop, so the client sees the server's goodbye meanwhile.
    await eventually(lambda: _alive(pg_server, pids), lambda n: n == 0, "the sessions to end")
    assert await backend.kv.get("pool") == "1"


async def _alive(server: PgServer, pids: list[int]) -> int:
    async with await psycopg.AsyncConnection.connect(server.url) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def _terminate(server: PgServer, query_like: str) -> list[int]:
    """Terminate the uwsx sessions whose current/last statement matches ``query_like``;
    returns their pids."""
    with psycopg.connect(server.url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM (SELECT pid FROM pg_stat_activity "
            "WHERE application_name = 'uwsx' AND query LIKE %s AND pid <> pg_backend_pid() "
            "OFFSET 0) AS doomed",
            (query_like,),
        ).fetchall()
    return [int(pid) for pid, done in rows if done]
