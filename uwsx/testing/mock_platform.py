"""``MockPlatform``: a Platform that records every call, for feature tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from uwsx.platform import (
    Connection,
    LocalConnection,
    Message,
    PressureSnapshot,
    TopicPublisher,
    TopPublisher,
)

__all__ = [
    "Checked",
    "MockConnection",
    "MockPlatform",
    "Published",
    "Requested",
    "Sent",
    "SentCoalesced",
    "Subscribed",
]

#: The seed's ``mockWs``: records its topics; raises once closed.
MockConnection = LocalConnection


@dataclass(frozen=True, slots=True)
class Published:
    topic: str
    event: str
    data: Any = None
    relay: bool = True
    batched: bool = False


@dataclass(frozen=True, slots=True)
class Sent:
    conn: Connection
    topic: str
    event: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class SentCoalesced:
    conn: Connection
    key: str
    topic: str
    event: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class Requested:
    conn: Connection
    event: str
    data: Any
    timeout: float


@dataclass(frozen=True, slots=True)
class Subscribed:
    conn: Connection
    topic: str


Checked = Subscribed


class MockPlatform:
    """Records calls in ``published``, ``published_batches``, ``sent``, ``sent_coalesced``,
    ``requested``, ``subscribed``, ``unsubscribed``, ``checked_subscribe``.

    ``publish`` returns True, ``send`` returns 1, ``subscribers`` returns the value set in
    ``subscriber_counts`` (0 by default), ``subscribe``/``check_subscribe`` allow (``None``)
    unless ``denials[topic]`` names a reason, ``request`` answers ``request_reply``.
    """

    def __init__(self) -> None:
        self.published: list[Published] = []
        self.published_batches: list[list[Message]] = []
        self.sent: list[Sent] = []
        self.sent_coalesced: list[SentCoalesced] = []
        self.requested: list[Requested] = []
        self.subscribed: list[Subscribed] = []
        self.unsubscribed: list[Subscribed] = []
        self.checked_subscribe: list[Checked] = []
        self.subscriber_counts: dict[str, int] = {}
        self.denials: dict[str, str] = {}
        self.request_reply: Any = None
        self.request_id = ""
        self.connections = 0
        self.max_payload_length = 1024 * 1024
        self._pressure = PressureSnapshot()
        self._pressure_cbs: list[Callable[[PressureSnapshot], None]] = []
        self._rate_cbs: list[Callable[[Sequence[TopPublisher]], None]] = []

    def reset(self) -> None:
        for log in (
            self.published,
            self.published_batches,
            self.sent,
            self.sent_coalesced,
            self.requested,
            self.subscribed,
            self.unsubscribed,
            self.checked_subscribe,
        ):
            log.clear()

    def publish(self, topic: str, event: str, data: Any = None, *, relay: bool = True) -> bool:
        self.published.append(Published(topic, event, data, relay))
        return True

    def publish_batched(self, messages: Sequence[Message]) -> None:
        self.published_batches.append(list(messages))
        for m in messages:
            self.published.append(Published(m.topic, m.event, m.data, m.relay, batched=True))

    def batch(self, messages: Sequence[Message]) -> list[bool]:
        return [self.publish(m.topic, m.event, m.data) for m in messages]

    def send(self, conn: Connection, topic: str, event: str, data: Any = None) -> int:
        self.sent.append(Sent(conn, topic, event, data))
        return 1

    def send_coalesced(
        self, conn: Connection, *, key: str, topic: str, event: str, data: Any = None
    ) -> None:
        self.sent_coalesced.append(SentCoalesced(conn, key, topic, event, data))

    async def request(
        self, conn: Connection, event: str, data: Any = None, *, timeout: float = 5.0
    ) -> Any:
        self.requested.append(Requested(conn, event, data, timeout))
        return self.request_reply

    def send_to(
        self,
        predicate: Callable[[Mapping[str, Any]], bool],
        topic: str,
        event: str,
        data: Any = None,
    ) -> int:
        return 0

    def subscribers(self, topic: str) -> int:
        return self.subscriber_counts.get(topic, 0)

    def subscribe(self, conn: Connection, topic: str) -> str | Awaitable[str | None] | None:
        self.subscribed.append(Subscribed(conn, topic))
        return self.denials.get(topic)

    def unsubscribe(self, conn: Connection, topic: str) -> bool:
        self.unsubscribed.append(Subscribed(conn, topic))
        return False

    def check_subscribe(self, conn: Connection, topic: str) -> str | Awaitable[str | None] | None:
        self.checked_subscribe.append(Checked(conn, topic))
        return self.denials.get(topic)

    @property
    def pressure(self) -> PressureSnapshot:
        return self._pressure

    def set_pressure(self, snapshot: PressureSnapshot) -> None:
        """Replace the snapshot and notify ``on_pressure`` listeners (errors swallowed)."""
        self._pressure = snapshot
        for cb in list(self._pressure_cbs):
            try:
                cb(snapshot)
            except Exception:
                continue

    def emit_publish_rate(self, rates: Sequence[TopPublisher]) -> None:
        for cb in list(self._rate_cbs):
            try:
                cb(rates)
            except Exception:
                continue

    def on_pressure(self, callback: Callable[[PressureSnapshot], None]) -> Callable[[], None]:
        self._pressure_cbs.append(callback)
        return lambda: (
            self._pressure_cbs.remove(callback) if callback in self._pressure_cbs else None
        )

    def on_publish_rate(
        self, callback: Callable[[Sequence[TopPublisher]], None]
    ) -> Callable[[], None]:
        self._rate_cbs.append(callback)
        return lambda: self._rate_cbs.remove(callback) if callback in self._rate_cbs else None

    def buffered_amount(self, conn: Connection) -> int:
        return 0

    def topic(self, topic: str) -> TopicPublisher:
        return TopicPublisher(self, topic)
