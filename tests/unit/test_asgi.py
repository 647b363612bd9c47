"""The Starlette binding: subscribe, receive relayed publishes, replay on resume, denials."""

from __future__ import annotations

from types import SimpleNamespace

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient

from uwsx import LocalPlatform, ReplayBuffer
from uwsx.asgi import websocket_endpoint
from uwsx.testing import memory_backend


def make_app(platform: LocalPlatform, hooks: list[object]) -> Starlette:
    return Starlette(routes=[WebSocketRoute("/ws", websocket_endpoint(platform, hooks=hooks))])


def test_subscribe_publish_and_denial() -> None:
    platform = LocalPlatform(authorize=lambda conn, topic: "FORBIDDEN" if topic == "x" else None)
    opened: list[object] = []
    hook = SimpleNamespace(open=lambda conn, platform: opened.append(conn))
    with TestClient(make_app(platform, [hook])) as client, client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "subscribe", "topic": "x"})
        assert ws.receive_json() == {"topic": "x", "event": "denied", "data": {"code": "FORBIDDEN"}}
        ws.send_json({"type": "subscribe", "topic": "__system"})
        assert ws.receive_json()["data"] == {"code": "INVALID_TOPIC"}
        ws.send_json({"type": "subscribe", "topic": "chat"})
        ws.send_json({"type": "message", "data": "sync point"})
        client.portal.call(lambda: platform.publish("chat", "msg", {"n": 1}))  # type: ignore[union-attr]
        assert ws.receive_json() == {"topic": "chat", "event": "msg", "data": {"n": 1}}
    assert len(opened) == 1
    assert platform.connections == 0


def test_resume_replays_missed_messages() -> None:
    platform = LocalPlatform()
    replay = ReplayBuffer(memory_backend())
    hook = SimpleNamespace(resume=replay.resume_hook())
    with TestClient(make_app(platform, [hook])) as client:
        for i in (1, 2, 3):
            client.portal.call(replay.publish, platform, "room", "said", i)  # type: ignore[union-attr]
        with client.websocket_connect("/ws") as ws:
            ws.send_json({"type": "resume", "lastSeenSeqs": {"room": 1}})
            got = [ws.receive_json() for _ in range(3)]
    assert [(f["event"], f["data"]) for f in got] == [
        ("msg", {"seq": 2, "event": "said", "data": 2}),
        ("msg", {"seq": 3, "event": "said", "data": 3}),
        ("end", {"reqId": None, "epoch": got[-1]["data"]["epoch"]}),
    ]
