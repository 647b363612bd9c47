"""The ``Platform`` a realtime server offers to features, and an in-process implementation.

Features never talk to a WebSocket server directly: they call a :class:`Platform` (publish to
local subscribers, send to one connection, subscribe a connection...) and receive
:class:`Connection` objects from hooks. :class:`LocalPlatform` implements the whole protocol in
process memory (tests, the simulator, single-process apps); :mod:`uwsx.asgi` binds it to
Starlette/FastAPI WebSockets.

Return values that matter: ``publish`` returns whether any local subscriber got the message;
``send`` returns 0 (sent), 1 (queued under backpressure) or 2 (dropped, e.g. closed); ``subscribe``
and ``check_subscribe`` return ``None`` (allowed) or a denial reason, possibly as an awaitable.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from uwsx.errors import UwsxError

__all__ = [
    "SEND_DROPPED",
    "SEND_OK",
    "SEND_QUEUED",
    "Connection",
    "ConnectionClosedError",
    "Frame",
    "LocalConnection",
    "LocalPlatform",
    "Message",
    "Platform",
    "PressureSnapshot",
    "TopPublisher",
    "TopicPublisher",
    "resolve",
]

SEND_OK, SEND_QUEUED, SEND_DROPPED = 0, 1, 2

PressureReason = Literal["NONE", "PUBLISH_RATE", "SUBSCRIBERS", "MEMORY"]
Denial = str | None


class ConnectionClosedError(UwsxError):
    """The connection is closed; raised by ``subscribe``/``unsubscribe``/``buffered_amount``.
    Presence uses it as its liveness probe."""

    def __init__(self) -> None:
        super().__init__("connection is closed")


@dataclass(frozen=True, slots=True)
class Message:
    """One entry of ``publish_batched`` / ``batch``. ``relay=False``: deliver locally only (it
    came from the cluster bus already)."""

    topic: str
    event: str
    data: Any = None
    relay: bool = True


@dataclass(frozen=True, slots=True)
class Frame:
    """What a connection receives: ``topic``, ``event``, ``data``."""

    topic: str
    event: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class TopPublisher:
    topic: str
    messages_per_sec: float
    bytes_per_sec: float


@dataclass(frozen=True, slots=True)
class PressureSnapshot:
    """The server's load as sampled about once a second."""

    active: bool = False
    subscriber_ratio: float = 0.0
    publish_rate: float = 0.0
    memory_mb: float = 0.0
    reason: PressureReason = "NONE"
    top_publishers: tuple[TopPublisher, ...] = ()


@runtime_checkable
class Connection(Protocol):
    """One client connection, hashable by identity."""

    @property
    def user_data(self) -> dict[str, Any]:
        """The mutable per-connection data set at upgrade (``id``, ``remoteAddress``...)."""
        ...

    def subscribe(self, topic: str) -> bool:
        """Subscribe directly (no authorisation). Raises :class:`ConnectionClosedError`."""
        ...

    def unsubscribe(self, topic: str) -> bool:
        """Raises :class:`ConnectionClosedError` once closed."""
        ...

    def buffered_amount(self) -> int:
        """Bytes queued for sending; raises :class:`ConnectionClosedError` once closed."""
        ...


class TopicPublisher:
    """``platform.topic(t)``: shorthands publishing through the platform they came from."""

    __slots__ = ("_platform", "_topic")

    def __init__(self, platform: Platform, topic: str) -> None:
        self._platform = platform
        self._topic = topic

    def publish(self, event: str, data: Any = None) -> bool:
        return self._platform.publish(self._topic, event, data)

    def created(self, data: Any = None) -> bool:
        return self.publish("created", data)

    def updated(self, data: Any = None) -> bool:
        return self.publish("updated", data)

    def deleted(self, data: Any = None) -> bool:
        return self.publish("deleted", data)

    def set(self, value: Any) -> bool:
        return self.publish("set", value)

    def increment(self, amount: float = 1) -> bool:
        return self.publish("increment", amount)

    def decrement(self, amount: float = 1) -> bool:
        return self.publish("decrement", amount)


@runtime_checkable
class Platform(Protocol):
    """What a realtime server offers to features (seed spec §17)."""

    def publish(self, topic: str, event: str, data: Any = None, *, relay: bool = True) -> bool: ...

    def publish_batched(self, messages: Sequence[Message]) -> None: ...

    def batch(self, messages: Sequence[Message]) -> list[bool]: ...

    def send(self, conn: Connection, topic: str, event: str, data: Any = None) -> int: ...

    def send_coalesced(
        self, conn: Connection, *, key: str, topic: str, event: str, data: Any = None
    ) -> None: ...

    async def request(
        self, conn: Connection, event: str, data: Any = None, *, timeout: float = 5.0
    ) -> Any: ...

    def send_to(
        self,
        predicate: Callable[[Mapping[str, Any]], bool],
        topic: str,
        event: str,
        data: Any = None,
    ) -> int: ...

    def subscribers(self, topic: str) -> int: ...

    def subscribe(self, conn: Connection, topic: str) -> Denial | Awaitable[Denial]: ...

    def unsubscribe(self, conn: Connection, topic: str) -> bool: ...

    def check_subscribe(self, conn: Connection, topic: str) -> Denial | Awaitable[Denial]: ...

    @property
    def pressure(self) -> PressureSnapshot: ...

    def on_pressure(self, callback: Callable[[PressureSnapshot], None]) -> Callable[[], None]: ...

    def on_publish_rate(
        self, callback: Callable[[Sequence[TopPublisher]], None]
    ) -> Callable[[], None]: ...

    @property
    def request_id(self) -> str: ...

    @property
    def connections(self) -> int: ...

    @property
    def max_payload_length(self) -> int: ...

    def buffered_amount(self, conn: Connection) -> int: ...

    def topic(self, topic: str) -> TopicPublisher: ...


async def resolve(value: Denial | Awaitable[Denial]) -> Denial:
    """Await ``subscribe``/``check_subscribe`` results that may be sync or async."""
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass(eq=False)
class LocalConnection:
    """An in-process connection: records the frames it receives (``frames``) and its topics.

    ``responder`` answers :meth:`LocalPlatform.request` calls (``(event, data) -> reply``).
    ``close()`` marks it dead without telling anyone (a vanished client); afterwards
    ``subscribe``/``unsubscribe``/``buffered_amount`` raise :class:`ConnectionClosedError`.
    """

    user_data: dict[str, Any] = field(default_factory=dict)
    responder: Callable[[str, Any], Any] | None = None
    frames: list[Frame] = field(default_factory=list)
    topics: set[str] = field(default_factory=set)
    closed: bool = False
    on_frame: Callable[[Frame], None] | None = None

    def __hash__(self) -> int:
        return id(self)

    def subscribe(self, topic: str) -> bool:
        if self.closed:
            raise ConnectionClosedError()
        self.topics.add(topic)
        return True

    def unsubscribe(self, topic: str) -> bool:
        if self.closed:
            raise ConnectionClosedError()
        had = topic in self.topics
        self.topics.discard(topic)
        return had

    def is_subscribed(self, topic: str) -> bool:
        return topic in self.topics

    def buffered_amount(self) -> int:
        if self.closed:
            raise ConnectionClosedError()
        return 0

    def deliver(self, frame: Frame) -> int:
        if self.closed:
            return SEND_DROPPED
        self.frames.append(frame)
        if self.on_frame is not None:
            self.on_frame(frame)
        return SEND_OK

    def close(self) -> None:
        self.closed = True

    def frames_on(self, topic: str) -> list[Frame]:
        return [f for f in self.frames if f.topic == topic]


class LocalPlatform:
    """A complete in-process :class:`Platform` over :class:`LocalConnection` objects.

    :param authorize: ``(conn, topic) -> denial | None`` (sync or async) consulted by
        ``subscribe`` and ``check_subscribe``; allow everything when omitted.
    """

    def __init__(
        self,
        *,
        authorize: Callable[[Connection, str], Denial | Awaitable[Denial]] | None = None,
        request_id: str = "",
        max_payload_length: int = 1024 * 1024,
    ) -> None:
        self._authorize = authorize
        self._request_id = request_id
        self._max_payload = max_payload_length
        self._conns: dict[int, LocalConnection] = {}
        self._pressure = PressureSnapshot()
        self._pressure_cbs: dict[int, Callable[[PressureSnapshot], None]] = {}
        self._rate_cbs: dict[int, Callable[[Sequence[TopPublisher]], None]] = {}
        self._serial = 0

    # -- connections ---------------------------------------------------------------
    def connect(self, conn: LocalConnection | None = None, **user_data: Any) -> LocalConnection:
        """Register a connection (a new one built from ``user_data`` when not given)."""
        conn = conn if conn is not None else LocalConnection(user_data=dict(user_data))
        self._conns[id(conn)] = conn
        return conn

    def disconnect(self, conn: LocalConnection) -> None:
        self._conns.pop(id(conn), None)
        conn.close()

    def _subscribed(self, topic: str) -> Iterator[LocalConnection]:
        for conn in list(self._conns.values()):
            if not conn.closed and topic in conn.topics:
                yield conn

    # -- publishing ------------------------------------------------------------------
    def publish(self, topic: str, event: str, data: Any = None, *, relay: bool = True) -> bool:
        delivered = False
        frame = Frame(topic, event, data)
        for conn in self._subscribed(topic):
            conn.deliver(frame)
            delivered = True
        return delivered

    def publish_batched(self, messages: Sequence[Message]) -> None:
        for m in messages:
            self.publish(m.topic, m.event, m.data, relay=m.relay)

    def batch(self, messages: Sequence[Message]) -> list[bool]:
        return [self.publish(m.topic, m.event, m.data, relay=m.relay) for m in messages]

    def send(self, conn: Connection, topic: str, event: str, data: Any = None) -> int:
        if not isinstance(conn, LocalConnection):
            raise TypeError("LocalPlatform sends to LocalConnection objects")
        return conn.deliver(Frame(topic, event, data))

    def send_coalesced(
        self, conn: Connection, *, key: str, topic: str, event: str, data: Any = None
    ) -> None:
        # Nothing is ever queued in process, so the latest value is simply sent now.
        self.send(conn, topic, event, data)

    async def request(
        self, conn: Connection, event: str, data: Any = None, *, timeout: float = 5.0
    ) -> Any:
        if not isinstance(conn, LocalConnection) or conn.closed:
            raise ConnectionClosedError()
        if conn.responder is None:
            raise TimeoutError(f"request {event!r}: the connection never replies")
        reply = conn.responder(event, data)
        if inspect.isawaitable(reply):
            async with asyncio.timeout(timeout):
                return await reply
        return reply

    def send_to(
        self,
        predicate: Callable[[Mapping[str, Any]], bool],
        topic: str,
        event: str,
        data: Any = None,
    ) -> int:
        count = 0
        for conn in list(self._conns.values()):
            if not conn.closed and predicate(conn.user_data):
                conn.deliver(Frame(topic, event, data))
                count += 1
        return count

    # -- subscriptions ---------------------------------------------------------------
    def subscribers(self, topic: str) -> int:
        return sum(1 for _ in self._subscribed(topic))

    def subscribe(self, conn: Connection, topic: str) -> Denial | Awaitable[Denial]:
        if self._authorize is None:
            conn.subscribe(topic)
            return None
        decision = self._authorize(conn, topic)
        if inspect.isawaitable(decision):
            return self._subscribe_after(conn, topic, decision)
        if decision is None:
            conn.subscribe(topic)
        return decision

    async def _subscribe_after(
        self, conn: Connection, topic: str, pending: Awaitable[Denial]
    ) -> Denial:
        decision = await pending
        if decision is None:
            conn.subscribe(topic)
        return decision

    def unsubscribe(self, conn: Connection, topic: str) -> bool:
        try:
            return conn.unsubscribe(topic)
        except ConnectionClosedError:
            return False

    def check_subscribe(self, conn: Connection, topic: str) -> Denial | Awaitable[Denial]:
        return None if self._authorize is None else self._authorize(conn, topic)

    # -- pressure, identity ----------------------------------------------------------
    @property
    def pressure(self) -> PressureSnapshot:
        return self._pressure

    def set_pressure(self, snapshot: PressureSnapshot) -> None:
        self._pressure = snapshot
        for cb in list(self._pressure_cbs.values()):
            try:
                cb(snapshot)
            except Exception:
                continue

    def emit_publish_rate(self, rates: Sequence[TopPublisher]) -> None:
        for cb in list(self._rate_cbs.values()):
            try:
                cb(rates)
            except Exception:
                continue

    def _add(self, table: dict[int, Any], cb: Any) -> Callable[[], None]:
        if not callable(cb):
            raise TypeError("callback must be callable")
        self._serial += 1
        token = self._serial
        table[token] = cb
        return lambda: table.pop(token, None) and None

    def on_pressure(self, callback: Callable[[PressureSnapshot], None]) -> Callable[[], None]:
        return self._add(self._pressure_cbs, callback)

    def on_publish_rate(
        self, callback: Callable[[Sequence[TopPublisher]], None]
    ) -> Callable[[], None]:
        return self._add(self._rate_cbs, callback)

    @property
    def request_id(self) -> str:
        return self._request_id

    @request_id.setter
    def request_id(self, value: str) -> None:
        self._request_id = value

    @property
    def connections(self) -> int:
        return sum(1 for c in self._conns.values() if not c.closed)

    @property
    def max_payload_length(self) -> int:
        return self._max_payload

    def buffered_amount(self, conn: Connection) -> int:
        try:
            return conn.buffered_amount()
        except ConnectionClosedError:
            return 0

    def topic(self, topic: str) -> TopicPublisher:
        return TopicPublisher(self, topic)
