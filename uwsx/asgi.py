"""Bind the :class:`~uwsx.platform.Platform` protocol to Starlette / FastAPI WebSockets.

``websocket_endpoint(platform, hooks=...)`` returns an endpoint for ``WebSocketRoute`` (or
FastAPI's ``@app.websocket``). Each socket becomes a :class:`WebSocketConnection` registered on
the platform; frames published to its topics are sent as JSON ``{"topic", "event", "data"}``.

Client messages (JSON objects):

=========================================== =============================================
``{"type": "subscribe", "topic": t}``       authorised by ``platform.subscribe`` (a denial
                                            is answered ``{"topic": t, "event": "denied"}``)
``{"type": "unsubscribe", "topic": t}``
``{"type": "resume", "lastSeenSeqs": {...}}`` runs every hook's ``resume`` (replay catch-up)
``{"type": "message", "data": ...}``          passed to every hook's ``message``
=========================================== =============================================

Topics starting with ``__`` cannot be subscribed by clients; hooks subscribe server-side.
Hooks are objects (or ``SimpleNamespace``) with optional async ``open(conn, *, platform)``,
``subscribe(conn, topic, *, platform)``, ``unsubscribe(conn, topic, *, platform)``,
``message(conn, data, *, platform)``, ``resume(conn, *, last_seen_seqs, platform)`` and
``close(conn, *, platform)`` — e.g. ``bus.hooks``, ``presence.hooks``, or a namespace holding
``replay.resume_hook()`` as ``resume``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from uwsx import _runtime
from uwsx.platform import SEND_DROPPED, SEND_OK, Frame, LocalConnection, LocalPlatform, resolve

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

__all__ = ["WebSocketConnection", "websocket_endpoint"]

log = logging.getLogger("uwsx.asgi")


class WebSocketConnection(LocalConnection):
    """A live socket: frames are queued and written by the endpoint's sender task."""

    def __init__(self, user_data: dict[str, Any]) -> None:
        super().__init__(user_data=user_data)
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._queued_bytes = 0

    def deliver(self, frame: Frame) -> int:
        if self.closed:
            return SEND_DROPPED
        text = json.dumps(
            {"topic": frame.topic, "event": frame.event, "data": frame.data},
            separators=(",", ":"),
            ensure_ascii=False,
            default=str,
        )
        self._queued_bytes += len(text)
        self.outbox.put_nowait(text)
        return SEND_OK

    def sent(self, text: str) -> None:
        self._queued_bytes -= len(text)

    def buffered_amount(self) -> int:
        super().buffered_amount()  # raises once closed
        return self._queued_bytes


async def _call(hooks: Sequence[object], name: str, *args: Any, **kwargs: Any) -> None:
    for hook in hooks:
        fn = getattr(hook, name, None)
        if fn is None:
            continue
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("hook %s.%s failed", type(hook).__name__, name)


def websocket_endpoint(
    platform: LocalPlatform,
    *,
    hooks: Sequence[object] = (),
    user_data: Callable[[WebSocket], dict[str, Any] | Awaitable[dict[str, Any]]] | None = None,
) -> Callable[[WebSocket], Awaitable[None]]:
    """An ASGI WebSocket endpoint serving ``platform`` with ``hooks``.

    :param user_data: builds the connection's ``user_data`` from the handshake (default: the
        client address as ``remoteAddress`` plus the query parameters).
    """

    async def endpoint(websocket: WebSocket) -> None:
        from starlette.websockets import WebSocketDisconnect

        if user_data is None:
            data: dict[str, Any] = dict(websocket.query_params)
            if websocket.client is not None:
                data["remoteAddress"] = websocket.client.host
        else:
            built = user_data(websocket)
            data = await built if inspect.isawaitable(built) else built
        await websocket.accept()
        conn = WebSocketConnection(data)
        platform.connect(conn)
        tasks = _runtime.current().task_group("asgi-connection")

        async def sender() -> None:
            while (text := await conn.outbox.get()) is not None:
                await websocket.send_text(text)
                conn.sent(text)

        tasks.spawn(sender(), name="uwsx-ws-sender")
        await _call(hooks, "open", conn, platform=platform)
        try:
            while True:
                raw = await websocket.receive_text()
                await _handle(raw, conn)
        except WebSocketDisconnect:
            pass
        finally:
            platform.disconnect(conn)
            await _call(hooks, "close", conn, platform=platform)
            conn.outbox.put_nowait(None)
            await tasks.aclose()

    async def _handle(raw: str, conn: WebSocketConnection) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind, topic = msg.get("type"), msg.get("topic")
        if kind in ("subscribe", "unsubscribe"):
            if not isinstance(topic, str) or not topic or topic.startswith("__"):
                conn.deliver(Frame(str(topic), "denied", {"code": "INVALID_TOPIC"}))
                return
            if kind == "unsubscribe":
                platform.unsubscribe(conn, topic)
                await _call(hooks, "unsubscribe", conn, topic, platform=platform)
                return
            denial = await resolve(platform.subscribe(conn, topic))
            if denial:
                conn.deliver(Frame(topic, "denied", {"code": denial}))
                return
            await _call(hooks, "subscribe", conn, topic, platform=platform)
        elif kind == "resume" and isinstance(msg.get("lastSeenSeqs"), dict):
            await _call(
                hooks, "resume", conn, last_seen_seqs=msg["lastSeenSeqs"], platform=platform
            )
        elif kind == "message":
            await _call(hooks, "message", conn, msg.get("data"), platform=platform)

    return endpoint
