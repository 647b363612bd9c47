"""LocalPlatform / LocalConnection, and two in-process instances sharing one memory:// store."""

from __future__ import annotations

import pytest

import uwsx
from tests.helpers import eventually
from uwsx import LocalPlatform, Message, PubSubBus, ReplayBuffer
from uwsx.platform import ConnectionClosedError, Frame, LocalConnection, PressureSnapshot


def test_publish_reaches_only_subscribers_and_reports_delivery() -> None:
    p = LocalPlatform()
    a, b = p.connect(id="a"), p.connect(id="b")
    p.subscribe(a, "chat")
    assert p.publish("chat", "msg", {"x": 1}) is True
    assert p.publish("other", "msg") is False
    assert a.frames == [Frame("chat", "msg", {"x": 1})]
    assert b.frames == []
    assert p.subscribers("chat") == 1
    assert p.connections == 2


def test_batch_and_publish_batched() -> None:
    p = LocalPlatform()
    c = p.connect()
    c.subscribe("t")
    assert p.batch([Message("t", "a"), Message("u", "b")]) == [True, False]
    p.publish_batched([Message("t", "c", 3)])
    assert [f.event for f in c.frames] == ["a", "c"]


def test_closed_connection_raises_and_send_reports_dropped() -> None:
    p = LocalPlatform()
    c = p.connect()
    c.close()
    for call in (lambda: c.subscribe("x"), lambda: c.unsubscribe("x"), c.buffered_amount):
        with pytest.raises(ConnectionClosedError):
            call()
    assert p.send(c, "t", "e") == 2
    assert p.buffered_amount(c) == 0
    assert p.unsubscribe(c, "x") is False


async def test_authorize_hook_sync_and_async() -> None:
    async def deny_private(conn: object, topic: str) -> str | None:
        return "FORBIDDEN" if topic.startswith("private") else None

    p = LocalPlatform(authorize=deny_private)
    c = p.connect()
    assert await uwsx.platform.resolve(p.subscribe(c, "private:1")) == "FORBIDDEN"
    assert await uwsx.platform.resolve(p.subscribe(c, "public")) is None
    assert c.topics == {"public"}
    assert await uwsx.platform.resolve(p.check_subscribe(c, "private:2")) == "FORBIDDEN"


async def test_request_reply_and_send_to() -> None:
    p = LocalPlatform()
    c = p.connect(LocalConnection(user_data={"role": "admin"}, responder=lambda e, d: {"ok": d}))
    assert await p.request(c, "ping", 1) == {"ok": 1}
    silent = p.connect()
    with pytest.raises(TimeoutError):
        await p.request(silent, "ping")
    assert p.send_to(lambda ud: ud.get("role") == "admin", "t", "e") == 1


def test_pressure_listeners() -> None:
    p = LocalPlatform()
    seen: list[str] = []
    off = p.on_pressure(lambda s: seen.append(s.reason))
    p.set_pressure(PressureSnapshot(active=True, reason="MEMORY"))
    off()
    p.set_pressure(PressureSnapshot())
    assert seen == ["MEMORY"]
    assert p.pressure.reason == "NONE"


async def test_two_local_instances_share_publishes_and_replays() -> None:
    # Two "instances" (platform + features) on one memory:// name see each other.
    name = "memory://two-instances"
    a_backend, b_backend = await uwsx.connect(name), await uwsx.connect(name)
    a_platform, b_platform = LocalPlatform(), LocalPlatform()
    a_bus, b_bus = PubSubBus(a_backend), PubSubBus(b_backend)
    await a_bus.activate(a_platform)
    await b_bus.activate(b_platform)
    a_replay, b_replay = ReplayBuffer(a_backend), ReplayBuffer(b_backend)
    a_pub = a_bus.wrap(a_platform)
    listener = b_platform.connect(id="bob")
    listener.subscribe("room")
    seq = await a_replay.publish(a_pub, "room", "said", {"text": "hi"})
    await eventually(lambda: len(listener.frames) == 1)
    assert listener.frames == [Frame("room", "said", {"text": "hi"})]
    late = b_platform.connect(id="carol")
    await b_replay.replay(late, "room", 0, b_platform)
    assert late.frames == [
        Frame("__replay:room", "msg", {"seq": seq, "event": "said", "data": {"text": "hi"}}),
        Frame("__replay:room", "end", {"reqId": None, "epoch": late.frames[-1].data["epoch"]}),
    ]
    for bus in (a_bus, b_bus):
        await bus.close()
    for backend in (a_backend, b_backend):
        await backend.close()
