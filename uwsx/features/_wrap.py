"""``PlatformWrapper``: a Platform that forwards everything to another one, live.

Buses subclass it to add cluster relaying to ``publish``/``batch``/``publish_batched`` while
every other member (and any extra attribute an application set on the inner platform, such as
``replay`` or ``presence``) is read from the inner platform at the time of access.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from uwsx.platform import (
    Connection,
    Message,
    Platform,
    PressureSnapshot,
    TopicPublisher,
    TopPublisher,
)

__all__ = ["PlatformWrapper"]


class PlatformWrapper:
    """Forwards every :class:`~uwsx.platform.Platform` member to ``inner``."""

    def __init__(self, inner: Platform) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not defined here: app-specific slots on the inner one.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def publish(self, topic: str, event: str, data: Any = None, *, relay: bool = True) -> bool:
        return self.inner.publish(topic, event, data, relay=relay)

    def publish_batched(self, messages: Sequence[Message]) -> None:
        self.inner.publish_batched(messages)

    def batch(self, messages: Sequence[Message]) -> list[bool]:
        return self.inner.batch(messages)

    def send(self, conn: Connection, topic: str, event: str, data: Any = None) -> int:
        return self.inner.send(conn, topic, event, data)

    def send_coalesced(
        self, conn: Connection, *, key: str, topic: str, event: str, data: Any = None
    ) -> None:
        self.inner.send_coalesced(conn, key=key, topic=topic, event=event, data=data)

    async def request(
        self, conn: Connection, event: str, data: Any = None, *, timeout: float = 5.0
    ) -> Any:
        return await self.inner.request(conn, event, data, timeout=timeout)

    def send_to(
        self,
        predicate: Callable[[Mapping[str, Any]], bool],
        topic: str,
        event: str,
        data: Any = None,
    ) -> int:
        return self.inner.send_to(predicate, topic, event, data)

    def subscribers(self, topic: str) -> int:
        return self.inner.subscribers(topic)

    def subscribe(self, conn: Connection, topic: str) -> str | Awaitable[str | None] | None:
        return self.inner.subscribe(conn, topic)

    def unsubscribe(self, conn: Connection, topic: str) -> bool:
        return self.inner.unsubscribe(conn, topic)

    def check_subscribe(self, conn: Connection, topic: str) -> str | Awaitable[str | None] | None:
        return self.inner.check_subscribe(conn, topic)

    @property
    def pressure(self) -> PressureSnapshot:
        return self.inner.pressure

    def on_pressure(self, callback: Callable[[PressureSnapshot], None]) -> Callable[[], None]:
        return self.inner.on_pressure(callback)

    def on_publish_rate(
        self, callback: Callable[[Sequence[TopPublisher]], None]
    ) -> Callable[[], None]:
        return self.inner.on_publish_rate(callback)

    @property
    def request_id(self) -> str:
        return self.inner.request_id

    @property
    def connections(self) -> int:
        return self.inner.connections

    @property
    def max_payload_length(self) -> int:
        return self.inner.max_payload_length

    def buffered_amount(self, conn: Connection) -> int:
        return self.inner.buffered_amount(conn)

    def topic(self, topic: str) -> TopicPublisher:
        # Built on this wrapper so the shorthands relay too.
        return TopicPublisher(self, topic)
