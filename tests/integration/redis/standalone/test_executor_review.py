"""Executor review: error classification, cancellation and ordering of the Redis command
executor (:mod:`uwsx_redis._driver_exec`) against a real server.

Retryable replies are produced on demand with ``EVAL ... redis.error_reply('TRYAGAIN ...')``,
and the executor's resend pause is replaced by an event the test controls, so nothing here
depends on timing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool

from tests.integration.redis.support import Opener, WireCounter, until
from tests.integration.redis_servers import RedisDeployment
from uwsx.errors import BackendError, Indeterminate, Unavailable
from uwsx_redis import RedisBackend
from uwsx_redis._driver_exec import Executor, Op
from uwsx_redis._driver_nodes import PoolNode

#: Counts its runs in KEYS[1] and answers TRYAGAIN the first ARGV[1] times (INCR applies even
#: then: the test can see whether the executor resent it).
_FLAKY = """
local n = redis.call('INCR', KEYS[1])
if n <= tonumber(ARGV[1]) then return redis.error_reply('TRYAGAIN not yet') end
return n
"""
_ALWAYS_TRYAGAIN = "return redis.error_reply('TRYAGAIN never')"


def _executor(backend: RedisBackend) -> Executor:
    ex: Executor = backend._ctx.executor
    return ex


class _Gate:
    """Replaces the executor's pause before a resend: it reports the pause and holds it until
    released."""

    def __init__(self) -> None:
        self.pausing = asyncio.Event()
        self.release = asyncio.Event()

    async def pause(self, ops: list[Op]) -> None:
        self.pausing.set()
        await self.release.wait()


def _gate(monkeypatch: pytest.MonkeyPatch, ex: Executor) -> _Gate:
    gate = _Gate()
    monkeypatch.setattr(ex, "_pause", gate.pause)
    return gate


async def test_deadline_while_waiting_to_resend_is_unavailable(
    redis_standalone: RedisDeployment,
    open_redis: Opener,
    uwsx_key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # TRYAGAIN proves the op did not run; its deadline passing before the resend must not
    # turn it into "may have been applied".
    backend = await open_redis(redis_standalone.url, command_timeout=0.5)
    ex = _executor(backend)
    gate = _gate(monkeypatch, ex)
    counter = f"{uwsx_key_prefix}runs"
    op = Op([("EVAL", _FLAKY, 1, counter, 1)], route=counter)
    with pytest.raises(Unavailable) as caught:
        await ex.run(op)
    assert not isinstance(caught.value, Indeterminate)
    assert gate.pausing.is_set()
    gate.release.set()
    await until(lambda: len(ex._tasks) == 0, "the resend task to end")
    assert redis_standalone.client().get(counter) == b"1", "never resent after the deadline"


async def test_caller_cancelled_while_waiting_to_resend_is_not_resent(
    redis_standalone: RedisDeployment,
    open_redis: Opener,
    uwsx_key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = await open_redis(redis_standalone.url)
    ex = _executor(backend)
    gate = _gate(monkeypatch, ex)
    counter = f"{uwsx_key_prefix}runs"
    call = asyncio.ensure_future(ex.run(Op([("EVAL", _FLAKY, 1, counter, 1)], route=counter)))
    await gate.pausing.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    gate.release.set()
    await until(lambda: len(ex._tasks) == 0, "the resend task to end")
    assert redis_standalone.client().get(counter) == b"1", "the abandoned op was resent"
    await backend.kv.set("after", "ok")
    assert await backend.kv.get("after") == "ok", "the executor still works"


async def test_retry_still_works(
    redis_standalone: RedisDeployment, open_redis: Opener, uwsx_key_prefix: str
) -> None:
    backend = await open_redis(redis_standalone.url)
    counter = f"{uwsx_key_prefix}runs"
    (reply,) = await _executor(backend).run(Op([("EVAL", _FLAKY, 1, counter, 2)], route=counter))
    assert reply == 3, "resent after each TRYAGAIN"


async def test_partly_applied_call_is_not_reported_as_not_applied(
    redis_standalone: RedisDeployment,
    open_redis: Opener,
    uwsx_key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One call, two ops: the SET is applied, the other op keeps answering TRYAGAIN until the
    # redirect budget runs out. "Not applied" (Unavailable) would be a lie.
    backend = await open_redis(redis_standalone.url)
    ex = _executor(backend)

    async def no_pause(ops: list[Op]) -> None:
        return None

    monkeypatch.setattr(ex, "_pause", no_pause)
    key = f"{uwsx_key_prefix}k"
    ops = [Op([("EVAL", _ALWAYS_TRYAGAIN, 0)]), Op([("SET", key, "v")], route=key)]
    with pytest.raises(Indeterminate):
        await ex.run_all(ops)
    assert redis_standalone.client().get(key) == b"v"
    # Reads only: a retry is harmless, Unavailable stays.
    reads = [Op([("EVAL", _ALWAYS_TRYAGAIN, 0)], readonly=True), Op([("GET", key)], route=key)]
    reads[1].readonly = True
    with pytest.raises(Unavailable) as caught:
        await ex.run_all(reads)
    assert not isinstance(caught.value, Indeterminate)


async def test_no_unretrieved_future_exception_when_a_call_fails(
    redis_standalone: RedisDeployment,
    open_redis: Opener,
    uwsx_key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The second op fails (WRONGTYPE) while the first is still being resent; when the first
    # fails too, nobody may leave the second op's error unretrieved.
    backend = await open_redis(redis_standalone.url)
    ex = _executor(backend)
    gate = _gate(monkeypatch, ex)
    key = f"{uwsx_key_prefix}list"
    redis_standalone.client().rpush(key, "x")
    call = asyncio.ensure_future(
        ex.run_all([Op([("EVAL", _ALWAYS_TRYAGAIN, 0)]), Op([("GET", key)], route=key)])
    )
    await gate.pausing.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    gate.release.set()
    await until(lambda: len(ex._tasks) == 0, "the resend task to end")
    del call
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
    assert "exception was never retrieved" not in caplog.text


async def test_unencodable_argument_fails_alone_and_is_not_indeterminate(
    redis_standalone: RedisDeployment, open_redis: Opener, uwsx_key_prefix: str
) -> None:
    # Packing fails before anything is written: the bad op is refused, and the ops that
    # shared its tick are sent as usual.
    backend = await open_redis(redis_standalone.url)
    ex = _executor(backend)
    good, bad = f"{uwsx_key_prefix}good", f"{uwsx_key_prefix}bad"
    results = await asyncio.gather(
        ex.run(Op([("SET", good, "1")], route=good)),
        ex.run(Op([("SET", bad, 10**5000)], route=bad)),
        ex.run(Op([("SET", bad, "\ud800")], route=bad)),
        ex.run(Op([("INCR", good)], route=good)),
        return_exceptions=True,
    )
    assert results[0] == [b"OK"]
    for failure in results[1:3]:
        assert isinstance(failure, ValueError | BackendError), failure
        assert not isinstance(failure, Indeterminate | Unavailable), failure
    assert results[3] == [2], "issued after the SET, run after it"


async def test_public_call_with_an_unencodable_int_is_refused(
    redis_standalone: RedisDeployment, open_redis: Opener
) -> None:
    kv = (await open_redis(redis_standalone.url)).kv
    with pytest.raises(Exception) as caught:
        await kv.incr("n", 10**5000)
    assert not isinstance(caught.value, Indeterminate)
    assert await kv.get("n") is None


async def test_ops_of_one_tick_beyond_max_batch_keep_issue_order(
    redis_standalone: RedisDeployment,
    open_redis: Opener,
    uwsx_key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Six SETs of one key in one tick, max_batch=2: the first pipeline is held while it gets
    # its connection (a slow connect); a later batch must not overtake it.
    backend = await open_redis(redis_standalone.url, max_batch=2)
    ex = _executor(backend)
    first = asyncio.Event()
    slow = asyncio.Event()
    original = PoolNode.acquire
    calls = 0

    async def acquire(self: PoolNode) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            first.set()
            await slow.wait()
        return await original(self)

    monkeypatch.setattr(PoolNode, "acquire", acquire)
    key = f"{uwsx_key_prefix}k"
    calls_out = [ex.run(Op([("RPUSH", key, str(i))], route=key)) for i in range(6)]
    gathered = asyncio.gather(*calls_out)
    await first.wait()
    # Give every other batch the chance to leave (they must not).
    for _ in range(20):
        await asyncio.sleep(0)
    slow.set()
    await gathered
    assert redis_standalone.client().lrange(key, 0, -1) == [b"0", b"1", b"2", b"3", b"4", b"5"]


async def test_pool_waiter_timing_out_as_a_connection_arrives_keeps_it(
    redis_standalone: RedisDeployment,
) -> None:
    pool = BlockingConnectionPool.from_url(redis_standalone.url, max_connections=1, timeout=0)
    node = PoolNode("n", pool)
    try:
        conn = await node.acquire()
        waiter = asyncio.ensure_future(node._wait())
        await asyncio.sleep(0)  # the waiter queues, its timeout is due on the next step
        await node.release(conn)  # hands the connection to the waiter...
        (outcome,) = await asyncio.gather(waiter, return_exceptions=True)
        if not isinstance(outcome, BaseException):  # it did get it: fine too
            await node.release(outcome)
        again = await node.acquire()  # the connection was not lost
        await node.release(again)
    finally:
        await pool.aclose()


class _Relay:
    """A TCP relay in front of the server that forwards replies only up to a byte budget
    (``None``: all): a server that stops answering, or stops in the middle of a reply."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.budget: int | None = None
        self._held: list[tuple[bytearray, asyncio.StreamWriter]] = []
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self.listen = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.listen = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += (writer, up_writer)
        held = (bytearray(), writer)
        self._held.append(held)
        self._tasks += (
            asyncio.ensure_future(self._pump(reader, up_writer, None)),
            asyncio.ensure_future(self._pump(up_reader, writer, held[0])),
        )

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, held: bytearray | None
    ) -> None:
        try:
            while data := await source.read(65536):
                if held is None:
                    sink.write(data)
                else:
                    held += data
                    self._flush()
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()

    def _flush(self) -> None:
        for held, writer in self._held:
            n = len(held) if self.budget is None else min(self.budget, len(held))
            if n and not writer.is_closing():
                writer.write(bytes(held[:n]))
            del held[:n]
            if self.budget is not None:
                self.budget -= n

    def allow(self, budget: int | None) -> None:
        self.budget = budget
        self._flush()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


@pytest.fixture
async def relay(redis_standalone: RedisDeployment) -> Any:
    r = _Relay(redis_standalone.ports[0])
    await r.start()
    try:
        yield r
    finally:
        await r.aclose()


def _wait_sent(op: Op) -> Any:
    from uwsx_redis._driver_op import SENT

    return lambda: op.state == SENT


async def test_caller_cancelled_in_flight_leaves_batch_and_connection_sound(
    relay: _Relay, open_redis: Opener, uwsx_key_prefix: str
) -> None:
    backend = await open_redis(f"redis://127.0.0.1:{relay.listen}/0", max_connections=1)
    ex = _executor(backend)
    a, b = f"{uwsx_key_prefix}a", f"{uwsx_key_prefix}b"
    relay.allow(0)
    op_a, op_b = Op([("INCR", a)], route=a), Op([("INCR", b)], route=b)
    call_a = asyncio.ensure_future(ex.run(op_a))
    call_b = asyncio.ensure_future(ex.run(op_b))
    await until(_wait_sent(op_b), "the pipeline to be written")
    call_a.cancel()
    relay.allow(None)
    assert await call_b == [1]
    with pytest.raises(asyncio.CancelledError):
        await call_a
    # The one connection read both replies: the next call gets its own.
    assert await ex.run(Op([("INCR", b)], route=b)) == [2]
    assert await ex.run(Op([("GET", a)], route=a)) == [b"1"]


@pytest.mark.parametrize("budget", [0, 3, 5, 8])
async def test_server_stopping_mid_pipeline(
    relay: _Relay, open_redis: Opener, uwsx_key_prefix: str, budget: int
) -> None:
    # Replies: ":1\r\n" (4 bytes) then "$1\r\n1\r\n" and ":1\r\n". The budget cuts the stream
    # before, inside or between replies; an op with its whole reply is answered, the others
    # fail honestly, and the connection is not reused.
    backend = await open_redis(
        f"redis://127.0.0.1:{relay.listen}/0", socket_timeout=0.3, max_connections=1
    )
    ex = _executor(backend)
    a, b = f"{uwsx_key_prefix}a", f"{uwsx_key_prefix}b"
    relay.allow(budget)
    outcomes = await asyncio.gather(
        ex.run(Op([("INCR", a)], route=a)),
        ex.run(Op([("GET", a)], route=a, readonly=True)),
        ex.run(Op([("INCR", b)], route=b)),
        return_exceptions=True,
    )
    expect: list[Any] = [
        [1] if budget >= 4 else Indeterminate,
        [b"1"] if budget >= 11 else Unavailable,
        Indeterminate,
    ]
    for got, want in zip(outcomes, expect, strict=True):
        if isinstance(want, list):
            assert got == want
        else:
            assert type(got) is want, got
    relay.allow(None)
    assert await ex.run(Op([("INCR", b)], route=b)) == [2], "a fresh connection, no stale reply"
    assert await ex.run(Op([("INCR", a)], route=a)) == [2]


async def test_max_batch_boundary(
    redis_standalone: RedisDeployment,
    open_redis: Opener,
    uwsx_key_prefix: str,
    wire: WireCounter,
) -> None:
    backend = await open_redis(redis_standalone.url, max_batch=3)
    ex = _executor(backend)
    key = f"{uwsx_key_prefix}k"
    await ex.run(Op([("GET", key)], route=key))  # connected
    for count, trips in ((3, 1), (4, 2), (7, 3)):
        redis_standalone.client().delete(key)
        wire.reset()
        await asyncio.gather(*(ex.run(Op([("RPUSH", key, i)], route=key)) for i in range(count)))
        assert wire.sends == trips, count
        assert redis_standalone.client().lrange(key, 0, -1) == [b"%d" % i for i in range(count)]


async def test_resent_op_is_not_overtaken_by_a_later_one(
    redis_standalone: RedisDeployment,
    open_redis: Opener,
    uwsx_key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # X pushes "1" but is refused once with TRYAGAIN (nothing pushed); Y, issued while X waits
    # to be resent, pushes "2". The server must see X first.
    backend = await open_redis(redis_standalone.url, max_connections=1)
    ex = _executor(backend)
    gate = _gate(monkeypatch, ex)
    key, runs = f"{uwsx_key_prefix}list", f"{uwsx_key_prefix}runs"
    push_once_refused = """
    if redis.call('INCR', KEYS[2]) == 1 then return redis.error_reply('TRYAGAIN not yet') end
    return redis.call('RPUSH', KEYS[1], ARGV[1])
    """
    call_x = asyncio.ensure_future(
        ex.run(Op([("EVAL", push_once_refused, 2, key, runs, "1")], route=key))
    )
    await gate.pausing.wait()
    call_y = asyncio.ensure_future(ex.run(Op([("RPUSH", key, "2")], route=key)))
    for _ in range(20):  # every chance to overtake (it must not)
        await asyncio.sleep(0)
    gate.release.set()
    await asyncio.gather(call_x, call_y)
    assert redis_standalone.client().lrange(key, 0, -1) == [b"1", b"2"]
