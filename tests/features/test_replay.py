"""ReplayBuffer: seed spec §5.6 / §6.6 and Postgres spec §6.7, on every backend with the port."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import Opener, eventually_async
from uwsx import ReplaySerializationError, ReplayStorageError, UnsupportedBackendError
from uwsx.features.replay import Gap, IdempotentPublish, ReplayBuffer
from uwsx.metrics import Metrics
from uwsx.ports.backend import Backend
from uwsx.reliability import CircuitBreaker
from uwsx.testing import (
    CountingBackend,
    ManualClock,
    MockConnection,
    MockPlatform,
    Published,
    Sent,
)

STORAGES = ["sortedset", "stream"]
#: Publishes that certainly trim a size-5 buffer: Redis streams trim approximately, whole
#: listpack nodes (100 entries by default) at a time, so the oldest entry moves in steps.
TRIMMED = 250


@pytest.fixture(params=STORAGES)
def storage(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


class _AnyEpoch(dict[str, object]):
    """Compares equal to an ``end`` frame's data whatever its (backend-specific) epoch."""

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, dict)
            and isinstance(other.get("epoch"), str)
            and {k: v for k, v in other.items() if k != "epoch"} == dict(self)
        )

    __hash__ = None


def end(req_id: str | None = None) -> dict[str, object]:
    return _AnyEpoch(reqId=req_id)


def frames(p: MockPlatform) -> list[tuple[str, str, object]]:
    return [(s.topic, s.event, s.data) for s in p.sent]


async def fill(buf: ReplayBuffer, p: MockPlatform, n: int, topic: str = "chat") -> None:
    for i in range(1, n + 1):
        await buf.publish(p, topic, "created", {"id": i})


@pytest.mark.parametrize("size", [0, -1, 1.5, "abc", True])
def test_size_must_be_positive_integer(size: object) -> None:
    from uwsx.testing import memory_backend

    with pytest.raises(ValueError, match="size must be a positive integer"):
        ReplayBuffer(memory_backend(), size=size)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [-1, float("nan")])
def test_ttl_must_be_non_negative(ttl: float) -> None:
    from uwsx.testing import memory_backend

    with pytest.raises(ValueError, match="ttl"):
        ReplayBuffer(memory_backend(), ttl=ttl)


def test_storage_and_durability_validation() -> None:
    from uwsx.testing import memory_backend

    b = memory_backend()
    with pytest.raises(ValueError, match="storage must be"):
        ReplayBuffer(b, storage="rocksdb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="durability"):
        ReplayBuffer(b, durability="strong")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_replicas"):
        ReplayBuffer(b, durability="replicated", min_replicas=0)
    with pytest.raises(UnsupportedBackendError, match="replica_wait"):
        ReplayBuffer(b, durability="replicated")
    with pytest.raises(TypeError, match="local_fanout_on_storage_failure"):
        ReplayBuffer(b, local_fanout_on_storage_failure="yes")  # type: ignore[arg-type]


async def test_publish_returns_seq_and_publishes_locally(backend: Backend, storage: str) -> None:
    p = MockPlatform()
    buf = ReplayBuffer(backend, storage=storage)  # type: ignore[arg-type]
    assert await buf.publish(p, "chat", "created", {"id": 1}) == 1
    assert await buf.publish(p, "chat", "created", {"id": 2}) == 2
    assert p.published[0] == Published("chat", "created", {"id": 1})


async def test_publish_is_one_round_trip(backend: Backend, storage: str) -> None:
    counting = CountingBackend(backend)
    buf = ReplayBuffer(counting, storage=storage)  # type: ignore[arg-type]
    await buf.publish(MockPlatform(), "chat", "created", 1)
    assert counting.total == 1


async def test_seq_per_topic(backend: Backend, storage: str) -> None:
    p = MockPlatform()
    buf = ReplayBuffer(backend, storage=storage)  # type: ignore[arg-type]
    assert await buf.seq("chat") == 0
    await fill(buf, p, 2)
    await fill(buf, p, 1, "todos")
    assert (await buf.seq("chat"), await buf.seq("todos"), await buf.seq("nope")) == (2, 1, 0)


async def test_since(backend: Backend, storage: str) -> None:
    p = MockPlatform()
    buf = ReplayBuffer(backend, storage=storage)  # type: ignore[arg-type]
    await fill(buf, p, 3)
    assert await buf.since("chat", 1) == [
        {"seq": 2, "topic": "chat", "event": "created", "data": {"id": 2}},
        {"seq": 3, "topic": "chat", "event": "created", "data": {"id": 3}},
    ]
    assert await buf.since("chat", 3) == []
    assert await buf.since("unknown", 0) == []
    assert len(await buf.since("chat", 0)) == 3


async def test_size_bounds_the_buffer_not_the_counter(backend: Backend) -> None:
    p = MockPlatform()
    buf = ReplayBuffer(backend, size=5)
    await fill(buf, p, 7)
    got = await buf.since("chat", 0)
    assert await buf.seq("chat") == 7
    assert [m["seq"] for m in got] == [3, 4, 5, 6, 7]


async def test_stream_keeps_at_least_size_newest(backend: Backend) -> None:
    p = MockPlatform()
    buf = ReplayBuffer(backend, storage="stream", size=5)
    await fill(buf, p, 40)
    seqs = [m["seq"] for m in await buf.since("chat", 0)]
    assert 5 <= len(seqs) <= 40
    assert seqs == list(range(41 - len(seqs), 41))


@pytest.mark.parametrize(("size", "n"), [(1, 2), (2, 3)])
async def test_concurrent_publishes_keep_newest(backend: Backend, size: int, n: int) -> None:
    p = MockPlatform()
    buf = ReplayBuffer(backend, size=size)
    await asyncio.gather(*(buf.publish(p, "chat", "e", i) for i in range(n)))
    assert [m["seq"] for m in await buf.since("chat", 0)] == list(range(n - size + 1, n + 1))


async def test_replay_sends_msgs_then_end(backend: Backend, storage: str) -> None:
    p, conn = MockPlatform(), MockConnection()
    buf = ReplayBuffer(backend, storage=storage)  # type: ignore[arg-type]
    await fill(buf, p, 3)
    await buf.replay(conn, "chat", 1, p)
    assert p.sent == [
        Sent(conn, "__replay:chat", "msg", {"seq": 2, "event": "created", "data": {"id": 2}}),
        Sent(conn, "__replay:chat", "msg", {"seq": 3, "event": "created", "data": {"id": 3}}),
        Sent(conn, "__replay:chat", "end", end()),
    ]
    assert len(p.published) == 3  # replay itself never publishes


async def test_replay_caught_up_unknown_and_req_id(backend: Backend) -> None:
    p, conn = MockPlatform(), MockConnection()
    buf = ReplayBuffer(backend)
    await fill(buf, p, 3)
    await buf.replay(conn, "chat", 3, p)
    await buf.replay(conn, "unknown", 0, p, req_id="req-123")
    assert frames(p) == [
        ("__replay:chat", "end", end()),
        ("__replay:unknown", "end", end("req-123")),
    ]


async def test_replay_reports_truncation(backend: Backend, storage: str) -> None:
    p, conn = MockPlatform(), MockConnection()
    metrics = Metrics()
    buf = ReplayBuffer(backend, storage=storage, size=5, metrics=metrics)  # type: ignore[arg-type]
    await fill(buf, p, TRIMMED)
    await buf.replay(conn, "chat", 1, p)
    events = [e for _, e, _ in frames(p)]
    assert events[0] == "truncated"
    assert frames(p)[0][2] is None
    assert events[-1] == "end"
    assert 'replay_truncations_total{topic="chat"} 1.0' in metrics.serialize()


async def test_no_truncation_when_contiguous(backend: Backend) -> None:
    p, conn = MockPlatform(), MockConnection()
    buf = ReplayBuffer(backend, size=5)
    await fill(buf, p, 3)
    await buf.replay(conn, "chat", 2, p)
    assert [e for _, e, _ in frames(p)] == ["msg", "end"]


async def test_cleared_buffer_with_counter_reports_truncation(
    backend: Backend, clock: ManualClock
) -> None:
    # Entries expired (ttl) while the counter survived: the client must be told it missed data.
    p, conn = MockPlatform(), MockConnection()
    buf = ReplayBuffer(backend, ttl=0.05)
    await fill(buf, p, 3)

    async def entries_gone() -> bool:
        return await buf.since("chat", 0) == []

    # The entries expire on the backend's clock: advance ours (memory) and poll (real servers).
    await eventually_async(entries_gone, step=lambda: clock.advance(0.05), what="expiry")
    assert await buf.seq("chat") == 3  # the counter never restarts on its own
    assert await buf.gap("chat", 1) == Gap(True, 2)
    await buf.replay(conn, "chat", 1, p)
    await buf.replay(conn, "chat", 0, p)
    assert [e for _, e, _ in frames(p)] == ["truncated", "end", "end"]
    assert await buf.publish(p, "chat", "created", 4) == 4


async def test_gap(backend: Backend, storage: str) -> None:
    p = MockPlatform()
    buf = ReplayBuffer(backend, storage=storage, size=5)  # type: ignore[arg-type]
    for bad in (-1, 1.5, "abc", True):
        with pytest.raises(ValueError, match="non-negative integer"):
            await buf.gap("chat", bad)  # type: ignore[arg-type]
    assert await buf.gap("chat", 0) == Gap(False, None)
    assert await buf.gap("unknown", 5) == Gap(False, None)
    await fill(buf, p, 3)
    assert await buf.gap("chat", 1) == Gap(False, None)
    assert await buf.gap("chat", 3) == Gap(False, None)
    assert await buf.gap("chat", 10) == Gap(False, None)
    await fill(buf, p, TRIMMED)
    assert await buf.gap("chat", 1) == Gap(True, 2)


async def test_resume_hook(backend: Backend) -> None:
    p, conn = MockPlatform(), MockConnection()
    buf = ReplayBuffer(backend)
    hook = buf.resume_hook()
    await hook(conn)
    await hook(conn, last_seen_seqs={"chat": 1})
    await hook(conn, last_seen_seqs={}, platform=p)
    assert p.sent == []
    for i in (1, 2):
        await buf.publish(p, "chat", "c", i)
    for i in (1, 2, 3):
        await buf.publish(p, "todos", "t", i)
    await hook(conn, last_seen_seqs={"chat": 1, "todos": 2}, platform=p)
    assert frames(p) == [
        ("__replay:chat", "msg", {"seq": 2, "event": "c", "data": 2}),
        ("__replay:chat", "end", end()),
        ("__replay:todos", "msg", {"seq": 3, "event": "t", "data": 3}),
        ("__replay:todos", "end", end()),
    ]
    p.reset()
    await hook(conn, last_seen_seqs={"chat": "oops", "todos": -5}, platform=p)
    assert [e for _, e, _ in frames(p)] == ["msg", "msg", "end", "msg", "msg", "msg", "end"]


async def test_clear_and_clear_topic(backend: Backend, storage: str) -> None:
    p = MockPlatform()
    buf = ReplayBuffer(backend, storage=storage)  # type: ignore[arg-type]
    await fill(buf, p, 2)
    await fill(buf, p, 1, "todos")
    await buf.clear_topic("chat")
    assert (await buf.seq("chat"), await buf.seq("todos")) == (0, 1)
    await buf.clear()
    assert (await buf.seq("todos"), await buf.since("todos", 0)) == (0, [])


@pytest.mark.parametrize("data", [{"id": 10**30 * 1j}, {1, 2}])
async def test_serialization_failure_touches_nothing(backend: Backend, data: object) -> None:
    counting = CountingBackend(backend)
    p = MockPlatform()
    buf = ReplayBuffer(counting, local_fanout_on_storage_failure=True)
    with pytest.raises(ReplaySerializationError) as err:
        await buf.publish(p, "chat", "created", data)
    assert not isinstance(err.value, ReplayStorageError)
    assert err.value.op == "publish"
    assert isinstance(err.value.cause, TypeError)
    assert (counting.total, p.published) == (0, [])


async def test_cyclic_data_is_a_serialization_error(backend: Backend) -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    with pytest.raises(ReplaySerializationError):
        await ReplayBuffer(backend).publish(MockPlatform(), "chat", "e", cyclic)


async def test_storage_failure_raises_or_falls_back(backend: Backend) -> None:
    log = backend.log
    assert log is not None
    boom = ConnectionError("redis down")

    async def failing(*args: object, **kwargs: object) -> object:
        raise boom

    log.append = failing  # type: ignore[method-assign,assignment]
    p = MockPlatform()
    with pytest.raises(ReplayStorageError) as err:
        await ReplayBuffer(backend).publish(p, "chat", "created", {"id": 1})
    assert (err.value.op, err.value.cause) == ("publish", boom)
    assert p.published == []
    metrics = Metrics()
    buf = ReplayBuffer(backend, local_fanout_on_storage_failure=True, metrics=metrics)
    assert await buf.publish(p, "chat", "created", {"id": 1}) is None
    assert p.published == [Published("chat", "created", {"id": 1})]
    assert 'replay_storage_fallbacks_total{topic="chat"} 1.0' in metrics.serialize()


async def test_breaker_failure_is_wrapped_for_publish_and_raw_for_reads(backend: Backend) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    buf = ReplayBuffer(backend, breaker=breaker)
    breaker.failure()
    with pytest.raises(ReplayStorageError) as err:
        await buf.publish(MockPlatform(), "chat", "e", 1)
    from uwsx import CircuitBrokenError

    assert isinstance(err.value.cause, CircuitBrokenError)
    with pytest.raises(CircuitBrokenError):
        await buf.seq("chat")
    breaker.reset()
    assert await buf.seq("chat") == 0


async def test_access_gate_denies_without_reading(backend: Backend) -> None:
    counting = CountingBackend(backend)
    p, conn = MockPlatform(), MockConnection()
    p.denials["private:room"] = "FORBIDDEN"
    buf = ReplayBuffer(counting)
    await buf.replay(conn, "private:room", 0, p, req_id="r1")
    assert frames(p) == [("__replay:private:room", "denied", {"code": "FORBIDDEN", "reqId": "r1"})]
    assert counting.total == 0


async def test_invalid_since_sends_only_end(backend: Backend) -> None:
    p, conn = MockPlatform(), MockConnection()
    buf = ReplayBuffer(backend)
    await fill(buf, p, 5)
    for bad in (-1, float("nan"), 1.5, "0", None):
        assert await buf.since("chat", bad) == []  # type: ignore[arg-type]
        await buf.replay(conn, "chat", bad, p)  # type: ignore[arg-type]
    assert {e for _, e, _ in frames(p)} == {"end"}


async def test_publish_idempotent(backend: Backend) -> None:
    p = MockPlatform()
    metrics = Metrics()
    buf = ReplayBuffer(backend, storage="stream", metrics=metrics)
    first = await buf.publish_idempotent(
        p, "chat", "created", {"id": 1}, producer_id="p1", request_id="r1"
    )
    again = await buf.publish_idempotent(
        p, "chat", "created", {"id": 1}, producer_id="p1", request_id="r1"
    )
    assert (first, again) == (IdempotentPublish(1, False), IdempotentPublish(1, True))
    assert len(p.published) == 1
    assert await buf.seq("chat") == 1
    assert await buf.gap("chat", 1) == Gap(False, None)
    other_req = await buf.publish_idempotent(p, "chat", "c", 2, producer_id="p1", request_id="r2")
    other_prod = await buf.publish_idempotent(p, "chat", "c", 3, producer_id="p2", request_id="r1")
    other_topic = await buf.publish_idempotent(
        p, "todos", "c", 3, producer_id="p1", request_id="r1"
    )
    assert [other_req.seq, other_prod.seq, other_topic.seq] == [2, 3, 1]
    assert not any(x.is_duplicate for x in (other_req, other_prod, other_topic))
    text = metrics.serialize()
    assert 'replay_idmp_writes_total{topic="chat"} 3.0' in text
    assert 'replay_idmp_hits_total{topic="chat"} 1.0' in text


async def test_publish_idempotent_validation(backend: Backend) -> None:
    p = MockPlatform()
    with pytest.raises(TypeError, match="storage='stream'"):
        await ReplayBuffer(backend).publish_idempotent(p, "t", "e", producer_id="a", request_id="b")
    buf = ReplayBuffer(backend, storage="stream")
    with pytest.raises(ValueError, match="producer_id"):
        await buf.publish_idempotent(p, "t", "e", producer_id="", request_id="b")
    with pytest.raises(ValueError, match="request_id"):
        await buf.publish_idempotent(p, "t", "e", producer_id="a", request_id="")
    with pytest.raises(ReplaySerializationError) as err:
        await buf.publish_idempotent(p, "t", "e", {1}, producer_id="a", request_id="b")
    assert err.value.op == "publish_idempotent"


async def test_two_instances_share_sequence_and_history(open_backend: Opener) -> None:
    a_p, b_p = MockPlatform(), MockPlatform()
    a = ReplayBuffer(await open_backend())
    b = ReplayBuffer(await open_backend())
    seqs = [
        await (a if i % 2 else b).publish(a_p if i % 2 else b_p, "chat", "e", i) for i in range(6)
    ]
    assert seqs == [1, 2, 3, 4, 5, 6]
    conn = MockConnection()
    await b.replay(conn, "chat", 3, b_p)
    assert [s.data["seq"] for s in b_p.sent if s.event == "msg"] == [4, 5, 6]


async def test_concurrent_publishes_from_instances_are_contiguous(open_backend: Opener) -> None:
    bufs = [ReplayBuffer(await open_backend()) for _ in range(4)]
    p = MockPlatform()
    seqs = await asyncio.gather(*(bufs[i % 4].publish(p, "chat", "e", i) for i in range(40)))
    assert sorted(s for s in seqs if s is not None) == list(range(1, 41))


async def test_table_option_separates_storage(backend: Backend) -> None:
    p = MockPlatform()
    a = ReplayBuffer(backend, table="replay_a")
    b = ReplayBuffer(backend, table="replay_b")
    await a.publish(p, "chat", "e", 1)
    assert (await a.seq("chat"), await b.seq("chat")) == (1, 0)
    from uwsx import InvalidNameError

    with pytest.raises(InvalidNameError):
        ReplayBuffer(backend, table="drop table;--")
    with pytest.raises(InvalidNameError):
        ReplayBuffer(backend, table="pg_class")


async def test_end_frame_carries_the_epoch_and_a_stale_epoch_replays_everything(
    backend: Backend, storage: str
) -> None:
    p, conn = MockPlatform(), MockConnection()
    buf = ReplayBuffer(backend, storage=storage)  # type: ignore[arg-type]
    await fill(buf, p, 3)
    await buf.replay(conn, "chat", 2, p)
    epoch = p.sent[-1].data["epoch"]
    assert isinstance(epoch, str)
    assert epoch
    p.reset()
    await buf.replay(conn, "chat", 2, p, epoch=epoch)  # same epoch: just what was missed
    assert [e for _, e, _ in frames(p)] == ["msg", "end"]
    p.reset()
    # A position from another epoch (the backend lost writes since): start over, explicitly.
    await buf.replay(conn, "chat", 2, p, epoch="some-older-epoch")
    assert [
        (e, d["seq"] if isinstance(d, dict) and e == "msg" else None) for _, e, d in frames(p)
    ] == [
        ("truncated", None),
        ("msg", 1),
        ("msg", 2),
        ("msg", 3),
        ("end", None),
    ]
    assert await buf.gap("chat", 2, epoch="some-older-epoch") == Gap(True, 1)
    assert await buf.gap("chat", 2, epoch=epoch) == Gap(False, None)
    p.reset()
    hook = buf.resume_hook()
    await hook(conn, last_seen_seqs={"chat": {"seq": 3, "epoch": "gone"}}, platform=p)
    assert next(e for _, e, _ in frames(p)) == "truncated"


async def test_epoch_changes_when_the_log_is_recreated(backend: Backend) -> None:
    p, conn = MockPlatform(), MockConnection()
    buf = ReplayBuffer(backend)
    await fill(buf, p, 2)
    await buf.replay(conn, "chat", 0, p)
    before = p.sent[-1].data["epoch"]
    await buf.clear_topic("chat")
    await fill(buf, p, 3)  # seqs 1..3 again: a client at 2 must not skip 3's predecessors
    p.reset()
    await buf.replay(conn, "chat", 2, p, epoch=before)
    assert [e for _, e, _ in frames(p)][:2] == ["truncated", "msg"]
