"""What an instance holds: a :class:`~uwsx.ports.Backend` whose every port call crosses the
instance's simulated link to the shared backend model.

:class:`SimConnection` implements the ``Backend`` protocol. Each port attribute is a proxy with
the port's exact methods; a call becomes an RPC (see :mod:`uwsx_sim.net`) whose apply step runs
the real memory-backend operation atomically on the store the connection currently talks to.
Feature code cannot tell it is not talking to a real adapter: it sees the same results and the
same error surface (``Indeterminate`` when a request or reply is lost, ``Unavailable`` once the
instance is gone).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, cast

from uwsx.errors import Indeterminate, Unavailable
from uwsx.memory import MemoryBackend, MemoryStore
from uwsx.ports import KV, Capability, Locks, Queue, SortedLog, Stream
from uwsx.ports.checks import check_space_name
from uwsx_sim.history import canonical
from uwsx_sim.model.pubsub import ClientPubSub
from uwsx_sim.model.replication import run_now

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from uwsx_sim.clock import SimClock
    from uwsx_sim.history import Trace
    from uwsx_sim.loop import NodeRef, SimLoop
    from uwsx_sim.model.replication import BackendModel
    from uwsx_sim.net import Link

__all__ = ["LAST_APPLY", "PORT_METHODS", "Endpoint", "Host", "SimConnection"]


class Host(Protocol):
    """What a connection needs from the world it lives in (a run, or a standalone model)."""

    model: BackendModel
    trace: Trace
    context: contextvars.Context
    backend_ops: int

    @property
    def loop(self) -> SimLoop: ...

    def observe(
        self, conn: SimConnection, label: str, record: Any, value: Any, at: float, serial: int
    ) -> None: ...


class Endpoint(Protocol):
    """What a connection needs from the instance it belongs to."""

    name: str
    incarnation: int
    ref: NodeRef
    link: Link
    clock: SimClock
    reply_ctx: contextvars.Context

    def spawn_system(self, coro: Coroutine[Any, Any, Any]) -> None: ...


log = logging.getLogger("uwsx_sim")

#: ``(backend time, apply serial)`` of the last op the calling task completed (checkers use it)
LAST_APPLY: contextvars.ContextVar[tuple[float, int]] = contextvars.ContextVar(
    "uwsx_sim_last_apply", default=(0.0, 0)
)

PORT_METHODS: dict[str, tuple[str, ...]] = {
    "kv": (
        "get",
        "get_many",
        "set",
        "set_if_absent",
        "compare_and_set",
        "compare_and_delete",
        "compare_and_expire",
        "expire",
        "ttl",
        "delete",
        "incr",
        "delete_prefix",
        "map_put",
        "map_put_many",
        "map_get",
        "map_items",
        "map_count",
        "map_remove",
        "map_sweep",
        "map_put_bounded",
        "bucket_take",
        "bucket_ban",
    ),
    "log": ("append", "read_after", "bounds", "delete", "delete_prefix"),
    "stream": ("append", "read_after", "bounds", "delete", "delete_prefix", "append_idempotent"),
    "locks": (
        "acquire",
        "renew",
        "release",
        "holder",
        "seize",
        "try_session_lock",
        "release_session_lock",
        "session_lock_held",
    ),
    "queue": (
        "enqueue",
        "claim",
        "complete",
        "fail",
        "extend",
        "pending",
        "clear",
        "task_insert",
        "task_rearm",
        "task_heartbeat",
        "task_commit",
        "task_fail",
        "task_read",
        "task_list",
        "task_counts",
        "task_expire_fence",
        "task_claim_pending",
        "task_reclaim_expired",
        "task_cleanup",
    ),
}

_ids = itertools.count(1)


class _PortProxy:
    """Base of the generated per-port proxies."""

    _port = ""

    def __init__(self, conn: SimConnection, space: str | None = None) -> None:
        self._conn = conn
        self._space = space

    def space(self, name: str) -> Self:
        return type(self)(self._conn, check_space_name(name))

    async def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        conn, port, space = self._conn, self._port, self._space

        def resolve() -> Any:
            target: Any = getattr(conn.inner, port)
            if space is not None:
                target = target.space(space)
            return getattr(target, method)(*args, **kwargs)

        return await conn.call(f"{port}.{method}", resolve, (port, space, method, args, kwargs))


def _make_method(name: str) -> Callable[..., Any]:
    async def method(self: _PortProxy, *args: Any, **kwargs: Any) -> Any:
        return await self._call(name, args, kwargs)

    method.__name__ = name
    return method


def _make_proxy(port: str) -> type[_PortProxy]:
    namespace: dict[str, Any] = {"_port": port, "__slots__": ()}
    for name in PORT_METHODS[port]:
        namespace[name] = _make_method(name)
    return type(f"Sim{port.capitalize()}Proxy", (_PortProxy,), namespace)


_PROXIES = {port: _make_proxy(port) for port in PORT_METHODS}

Record = tuple[str, str | None, str, tuple[Any, ...], dict[str, Any]]


class SimConnection:
    """One incarnation's connection to the backend model (the ``Backend`` protocol)."""

    def __init__(self, world: Host, node: Endpoint, inner: MemoryBackend, key_prefix: str) -> None:
        self.world = world
        self.node = node
        self.ref = node.ref
        self.inner = inner
        self._prefix = key_prefix
        self.who = f"{node.name}#{node.incarnation}"
        self.gen = 0
        self.inflight: dict[int, asyncio.Future[Any]] = {}
        self.closed = False
        self.severed = False
        # One multiplexed connection (the adapters pipeline): requests and replies stay FIFO.
        # Timers only say "the next one arrives now"; the queues decide which one, so two
        # arrivals at the same instant cannot be swapped by the scheduler's shuffle.
        self._last_request = 0.0
        self._last_reply = 0.0
        self._requests: deque[tuple[Any, ...]] = deque()
        self._replies: deque[tuple[asyncio.Future[Any], Any, BaseException | None]] = deque()
        self._kv = cast(KV, _PROXIES["kv"](self))
        self._log = cast(SortedLog, _PROXIES["log"](self))
        self._stream = cast(Stream, _PROXIES["stream"](self))
        self._locks = cast(Locks, _PROXIES["locks"](self))
        self._queue = cast(Queue, _PROXIES["queue"](self))
        self._pubsub = ClientPubSub(self)

    # -- the Backend protocol ---------------------------------------------------------
    @property
    def name(self) -> str:
        return "sim"

    @property
    def url(self) -> str:
        return f"sim://{self.node.name}"

    @property
    def key_prefix(self) -> str:
        return self._prefix

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self.inner.capabilities

    @property
    def info(self) -> Mapping[str, str]:
        return {"server": "sim", "node": self.who, "epoch": self.inner.store.epoch}

    @property
    def kv(self) -> KV:
        return self._kv

    @property
    def log(self) -> SortedLog:
        return self._log

    @property
    def stream(self) -> Stream:
        return self._stream

    @property
    def pubsub(self) -> ClientPubSub:
        return self._pubsub

    @property
    def locks(self) -> Locks:
        return self._locks

    @property
    def queue(self) -> Queue:
        return self._queue

    @property
    def functions(self) -> None:
        return None

    async def close(self) -> None:
        if self.closed:
            return
        await self._pubsub.close_all()
        self.closed = True
        # the connection closes: the backend ends its session (session locks are released)
        await self.inner.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- RPC ---------------------------------------------------------------------
    async def call(self, label: str, resolve: Callable[[], Any], record: Record | None) -> Any:
        """Send ``resolve`` to the backend; it runs there atomically at arrival time."""
        if self.severed or not self.ref.alive:
            raise Unavailable(f"{self.who} has crashed")
        if self.closed:
            raise Unavailable(f"{self.who}: the backend connection is closed")
        world = self.world
        loop = world.loop
        link = self.node.link
        fut: asyncio.Future[Any] = loop.create_future()
        rid = next(_ids)
        self.inflight[rid] = fut
        sent = loop.time()
        if link.request_lost():
            loop.call_at(
                sent + link.params.request_timeout,
                self._reply,
                fut,
                None,
                None,
                True,
                context=self.node.reply_ctx,
            )
        else:
            args = (fut, self.gen, sent, label, resolve, record)
            if link.params.ordered:
                arrive = self._last_request = max(sent + link.delay(), self._last_request)
                self._requests.append(args)
                loop.call_at(arrive, self._arrive_next, context=world.context)
            else:  # a pool of connections: requests overtake each other
                loop.call_at(sent + link.delay(), self._arrive, *args, context=world.context)
        try:
            value, info = await fut
        finally:
            self.inflight.pop(rid, None)
        LAST_APPLY.set(info)
        return value

    def _arrive_next(self) -> None:
        self._arrive(*self._requests.popleft())

    def _reply_next(self) -> None:
        if not self._replies:
            return  # the connection was reset: those replies never come
        fut, value, exc = self._replies.popleft()
        self._reply(fut, value, exc, False)

    def _arrive(
        self,
        fut: asyncio.Future[Any],
        gen: int,
        sent: float,
        label: str,
        resolve: Callable[[], Any],
        record: Record | None,
    ) -> None:
        if gen != self.gen:
            return  # the connection was reset while the request was in flight
        world = self.world
        loop = world.loop
        value, exc, info = self._apply(label, resolve, record)
        link = self.node.link
        if link.duplicate and link.rng.chance(link.duplicate):
            # the adapter re-sent after a timeout it hid: applied twice, second reply wins
            value, exc, info = self._apply(label, resolve, record)
        deadline = sent + link.params.request_timeout
        if link.reply_lost():
            loop.call_at(deadline, self._reply, fut, None, None, True, context=self.node.reply_ctx)
            return
        at = loop.time() + link.delay()
        if link.params.ordered:
            at = self._last_reply = max(at, self._last_reply)
        if at > deadline:
            loop.call_at(deadline, self._reply, fut, None, None, True, context=self.node.reply_ctx)
            return
        if link.params.ordered:
            self._replies.append((fut, (value, info), exc))
            loop.call_at(at, self._reply_next, context=self.node.reply_ctx)
        else:
            loop.call_at(
                at, self._reply, fut, (value, info), exc, False, context=self.node.reply_ctx
            )

    def _apply(
        self, label: str, resolve: Callable[[], Any], record: Record | None
    ) -> tuple[Any, BaseException | None, tuple[float, int]]:
        world = self.world
        model = world.model
        store = self.inner.store
        model.begin()
        value: Any = None
        exc: BaseException | None = None
        try:
            value = resolve()
            if asyncio.iscoroutine(value):
                value = run_now(value)
        except Exception as e:
            exc = e
        at = store.now()
        world.backend_ops += 1
        serial = world.backend_ops
        args = "" if record is None else canonical(record[3]) + canonical(record[4])
        result = type(exc).__name__ if exc is not None else canonical(value)
        world.trace.backend(world.loop.ticks, self.who, f"{label}{args}={result}")
        if exc is None and record is not None:
            port, space, method, a, kw = record
            model.record(store, self._prefix, port, space, method, a, kw, at)
            world.observe(self, label, record, value, at, serial)
        return value, exc, (at, serial)

    def _reply(
        self, fut: asyncio.Future[Any], value: Any, exc: BaseException | None, lost: bool
    ) -> None:
        if fut.done():
            return
        if lost:
            fut.set_exception(Indeterminate(f"{self.who}: no reply within the request timeout"))
        elif exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    # -- connection events ---------------------------------------------------------
    def reset(self) -> None:
        """The TCP connection dropped: fail in-flight calls, release session state at the
        backend, and let subscriptions reconnect (the adapter's behaviour)."""
        self.gen += 1
        self._replies.clear()
        inflight, self.inflight = self.inflight, {}
        for fut in inflight.values():
            self.world.loop.call_soon(
                self._reply, fut, None, None, True, context=self.node.reply_ctx
            )
        self.inner.reset_session()
        self._pubsub.connection_lost(reconnect=not self.severed)

    def sever(self) -> None:
        """The instance crashed: its connection closes; nothing it sent later arrives."""
        self.severed = True
        self.reset()

    def switch(self, store: MemoryStore) -> None:
        """Failover reached this client: reconnect to the new primary."""
        if self.severed:
            return
        self.reset()
        self.inner = MemoryBackend(store, key_prefix=self._prefix)

    def flush_held(self) -> None:
        self._pubsub.flush_held()
