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
from uwsx.ports.sorted_log import Appended
from uwsx_sim.history import canonical
from uwsx_sim.model.proxies import PORT_METHODS, PROXIES, WaitReply
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
_ids = itertools.count(1)

#: ``(backend time, apply serial)`` of the last op the calling task completed (checkers use it)
LAST_APPLY: contextvars.ContextVar[tuple[float, int]] = contextvars.ContextVar(
    "uwsx_sim_last_apply", default=(0.0, 0)
)

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
        # a WAIT blocks the connection (Redis reads none of its later commands meanwhile)
        self._blocked_until = 0.0
        self._kv = cast(KV, PROXIES["kv"](self))
        self._log = cast(SortedLog, PROXIES["log"](self))
        self._stream = cast(Stream, PROXIES["stream"](self))
        self._locks = cast(Locks, PROXIES["locks"](self))
        self._queue = cast(Queue, PROXIES["queue"](self))
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
        caps = self.inner.capabilities
        if self.world.model.replicas:
            caps = caps | {Capability.REPLICA_WAIT}  # WAIT needs someone to wait for
        return caps

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
    async def call(
        self,
        label: str,
        resolve: Callable[[], Any],
        record: Record | None,
        *,
        wait: tuple[int, float] | None = None,
    ) -> Any:
        """Send ``resolve`` to the backend; it runs there atomically at arrival time. With
        ``wait=(n, timeout)`` the reply waits for ``n`` replicas (WAIT; see :meth:`_wait`)."""
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
        elif world.model.down():
            # the restarted server is not listening yet: the connection attempt is refused
            # after a round trip, and nothing was sent
            refused = Unavailable(f"{self.who}: the backend refused the connection (restarting)")
            at = sent + link.delay() + link.delay()
            loop.call_at(at, self._reply, fut, None, refused, False, context=self.node.reply_ctx)
        else:
            args = (fut, self.gen, sent, label, resolve, record, wait)
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
        loop = self.world.loop
        # (a tick of slack: the loop rounds timers to whole nanoseconds, and a timer firing a
        # float ulp before ``_blocked_until`` must not re-arm itself forever)
        if self._blocked_until > loop.time() + 1e-9:
            loop.call_at(self._blocked_until, self._arrive_next, context=self.world.context)
            return
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
        wait: tuple[int, float] | None = None,
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
        ready = loop.time()
        if wait is not None and exc is None and isinstance(value, Appended):
            value, ready = self._wait(value, wait, ready)
            deadline += wait[1]  # the adapter's read timeout covers the wait
        if link.reply_lost():
            loop.call_at(deadline, self._reply, fut, None, None, True, context=self.node.reply_ctx)
            return
        at = ready + link.delay()
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

    def _wait(self, value: Appended, wait: tuple[int, float], now: float) -> tuple[Any, float]:
        """``WAIT n timeout`` after the append: returns as soon as ``n`` replicas acknowledged
        every write applied so far, or when the timeout passes, with the count acknowledged
        by then (Redis: https://redis.io/docs/latest/commands/wait/)."""
        wanted, timeout = wait
        model = self.world.model
        generation, times = model.ack_times(self.inner.store)
        acks = sorted(times)
        if wanted <= 0:
            ready = now
        elif wanted <= len(acks) and acks[wanted - 1] <= now + timeout:
            ready = max(now, acks[wanted - 1])
        else:
            ready = now + timeout
        if self.node.link.params.ordered:
            self._blocked_until = max(self._blocked_until, ready)
        return WaitReply(value, model, generation, times, ready, wanted), ready

    def _reply(
        self, fut: asyncio.Future[Any], value: Any, exc: BaseException | None, lost: bool
    ) -> None:
        if fut.done():
            return
        if not lost and exc is None and isinstance(value[0], WaitReply):
            waited = value[0]
            value = (waited.resolve(), value[1])
            self.world.trace.backend(
                self.world.loop.ticks,
                self.who,
                f"WAIT {waited.wanted}={value[0].replicas}@{waited.ready:.9f}",
            )
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
        self._blocked_until = 0.0
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
