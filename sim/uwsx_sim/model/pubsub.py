"""The PubSub port as an instance sees it: server-side subscriptions on the backend model,
messages pushed back over the link, and the adapter's reconnect-and-report-loss behaviour.

Guarantees modelled (the port's specification):

* a message reaches the subscriptions registered *at the server* when it is published, in
  publish order per subscription (pushes on one subscription are FIFO, like one TCP stream);
* when the connection drops (reset, long partition, failover, crash of the server) the
  server-side subscription is gone and messages published meanwhile are lost; the client
  reconnects with backoff, resubscribes every channel and then calls ``on_loss`` with the
  wall-clock window, so loss is never silent.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from uwsx.errors import Indeterminate, Unavailable
from uwsx.ports.checks import check_key, check_value
from uwsx.ports.pubsub import ExpiryHandler, LossHandler, LossWindow, MessageHandler
from uwsx_sim.model.replication import run_now

if TYPE_CHECKING:
    from uwsx_sim.model.client import SimConnection

__all__ = ["ClientPubSub", "ClientSubscription"]

log = logging.getLogger("uwsx_sim")


class ClientSubscription:
    """The client half of one subscription (the ``Subscription`` protocol)."""

    def __init__(
        self,
        pubsub: ClientPubSub,
        *,
        message_handler: MessageHandler | None,
        expiry_handler: ExpiryHandler | None,
        expiry_prefix: str | None,
        sharded: bool,
        on_loss: LossHandler | None,
    ) -> None:
        self._pubsub = pubsub
        self._conn = pubsub.conn
        self._message_handler = message_handler
        self._expiry_handler = expiry_handler
        self._expiry_prefix = expiry_prefix
        self._sharded = sharded
        self.on_loss = on_loss
        self._channels: dict[str, None] = {}
        #: the current server-side subscription and its generation (stale pushes are dropped)
        self.server: Any = None
        self.sgen = 0
        self._stale: list[Any] = []
        self._healthy = True
        self.closed = False
        self._last_push = 0.0
        self._inbox: deque[tuple[int, str, str | None]] = deque()
        self._lost_at = 0.0
        self._reconnecting = False

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    @property
    def healthy(self) -> bool:
        return self._healthy and not self.closed

    # -- server side (runs in the world's context) -------------------------------------
    def open_server(self) -> Any:
        """Create the server-side subscription for the current channels (at the backend)."""
        self.sgen += 1
        gen = self.sgen
        pubsub = self._conn.inner.pubsub
        if self._expiry_prefix is not None:

            def on_expired(key: str) -> None:
                self._push(gen, key, None)

            server = run_now(pubsub.subscribe_expired(self._expiry_prefix, on_expired))
        else:

            def on_message(channel: str, message: str) -> None:
                self._push(gen, channel, message)

            server = run_now(
                pubsub.subscribe(list(self._channels), on_message, sharded=self._sharded)
            )
        if self.server is not None:
            self._stale.append(self.server)
        self.server = server
        return server

    def drop_server(self) -> None:
        """The connection is gone: the backend forgets this subscription."""
        for server in [*self._stale, self.server]:
            if server is not None:
                run_now(server.close())
        self._stale.clear()
        self.server = None
        self.sgen += 1

    def _push(self, gen: int, channel: str, message: str | None) -> None:
        if self.closed or gen != self.sgen:
            return
        conn = self._conn
        link = conn.node.link
        if link.partitioned:
            self._pubsub.held.append((self, gen, channel, message))
            return
        loop = conn.world.loop
        at = max(loop.time() + link.delay(), self._last_push)
        self._last_push = at
        self._inbox.append((gen, channel, message))
        loop.call_at(at, self._deliver_next, context=conn.node.reply_ctx)

    def release_held(self, gen: int, channel: str, message: str | None) -> None:
        self._push(gen, channel, message)

    # -- client side -----------------------------------------------------------------
    def _deliver_next(self) -> None:
        # FIFO: the timer only says "one arrives now"; the inbox decides which
        if self._inbox:
            self._deliver(*self._inbox.popleft())

    def _deliver(self, gen: int, channel: str, message: str | None) -> None:
        if self.closed or gen != self.sgen:
            return
        if message is not None and channel not in self._channels:
            return  # the adapter dispatches only to channels this subscription holds
        try:
            if message is None:
                assert self._expiry_handler is not None
                self._expiry_handler(channel)
            else:
                assert self._message_handler is not None
                self._message_handler(channel, message)
        except Exception:
            log.exception("%s: pub/sub handler failed on %r", self._conn.who, channel)

    def connection_lost(self, *, reconnect: bool) -> None:
        if self.closed:
            return
        self.drop_server()
        if self._healthy:
            self._healthy = False
            self._lost_at = self._conn.node.clock.wall()
        if reconnect and not self._reconnecting:
            self._reconnecting = True
            self._conn.node.spawn_system(self._reconnect())

    async def _reconnect(self) -> None:
        conn = self._conn
        clock = conn.node.clock
        delay = conn.node.link.params.reconnect_delay
        try:
            while not self.closed and not conn.severed:
                await clock.sleep(delay)
                try:
                    await conn.call("pubsub.resubscribe", self.open_server, None)
                except (Indeterminate, Unavailable):
                    delay = min(delay * 2, 5.0)
                    continue
                for stale in self._stale:
                    run_now(stale.close())
                self._stale.clear()
                self._healthy = True
                if self.on_loss is not None:
                    try:
                        self.on_loss(LossWindow(self._lost_at, clock.wall()))
                    except Exception:
                        log.exception("%s: on_loss handler failed", conn.who)
                return
        finally:
            self._reconnecting = False

    async def add(self, channels: Iterable[str]) -> None:
        new = [check_key(c, "channel") for c in channels if c not in self._channels]
        if not new or self.closed:
            return
        for c in new:
            self._channels[c] = None

        def apply() -> Any:
            if self.server is not None:
                return self.server.add(new)
            return None

        try:
            await self._conn.call("pubsub.add", apply, None)
        except BaseException:
            # like the Redis adapter: a failed subscribe is detached again (best effort)
            await self.remove(new, quiet=True)
            raise

    async def remove(self, channels: Iterable[str], *, quiet: bool = False) -> None:
        """Channels leave the subscription at once (the adapter forgets them before the
        unsubscribe is confirmed, so a failed unsubscribe is not retried on reconnect)."""
        gone = [c for c in channels if c in self._channels]
        if not gone:
            return
        for c in gone:
            del self._channels[c]

        def apply() -> Any:
            if self.server is not None:
                return self.server.remove(gone)
            return None

        try:
            await self._conn.call("pubsub.remove", apply, None)
        except (Indeterminate, Unavailable):
            if not quiet:
                raise

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._channels.clear()
        self._pubsub.forget(self)
        if self._conn.severed:
            return
        try:
            await self._conn.call("pubsub.close", self._close_server, None)
        except (Indeterminate, Unavailable):
            pass

    def _close_server(self) -> None:
        for server in [*self._stale, self.server]:
            if server is not None:
                run_now(server.close())
        self._stale.clear()
        self.server = None


class ClientPubSub:
    """The PubSub port of a :class:`~uwsx_sim.model.client.SimConnection`."""

    def __init__(self, conn: SimConnection) -> None:
        self.conn = conn
        self._subs: dict[int, ClientSubscription] = {}
        self._next = 0
        #: pushes held during a partition, released in order on heal
        self.held: list[tuple[ClientSubscription, int, str, str | None]] = []

    @property
    def max_message_bytes(self) -> int | None:
        return None

    async def publish(self, channel: str, message: str, *, sharded: bool = False) -> None:
        check_key(channel, "channel")
        check_value(message, "message")
        conn = self.conn

        def apply() -> Any:
            return conn.inner.pubsub.publish(channel, message, sharded=sharded)

        await conn.call(
            "pubsub.publish", apply, ("pubsub", None, "publish", (channel, message), {})
        )

    async def publish_many(
        self, messages: Sequence[tuple[str, str]], *, sharded: bool = False
    ) -> None:
        checked = [(check_key(c, "channel"), check_value(m, "message")) for c, m in messages]
        conn = self.conn

        def apply() -> Any:
            return conn.inner.pubsub.publish_many(checked, sharded=sharded)

        await conn.call(
            "pubsub.publish_many", apply, ("pubsub", None, "publish_many", (checked,), {})
        )

    def _register(self, sub: ClientSubscription) -> ClientSubscription:
        self._next += 1
        self._subs[self._next] = sub
        return sub

    async def subscribe(
        self,
        channels: Iterable[str],
        handler: MessageHandler,
        *,
        sharded: bool = False,
        on_loss: LossHandler | None = None,
    ) -> ClientSubscription:
        if not callable(handler):
            raise TypeError("handler must be callable")
        wanted = [check_key(c, "channel") for c in channels]
        sub = ClientSubscription(
            self,
            message_handler=handler,
            expiry_handler=None,
            expiry_prefix=None,
            sharded=sharded,
            on_loss=on_loss,
        )
        for c in wanted:
            sub._channels[c] = None
        return await self._open(sub, "pubsub.subscribe")

    async def subscribe_expired(
        self, prefix: str, handler: ExpiryHandler, *, on_loss: LossHandler | None = None
    ) -> ClientSubscription:
        if not callable(handler):
            raise TypeError("handler must be callable")
        sub = ClientSubscription(
            self,
            message_handler=None,
            expiry_handler=handler,
            expiry_prefix=prefix,
            sharded=False,
            on_loss=on_loss,
        )
        return await self._open(sub, "pubsub.subscribe_expired")

    async def _open(self, sub: ClientSubscription, label: str) -> ClientSubscription:
        self._register(sub)
        try:
            await self.conn.call(label, sub.open_server, None)
        except BaseException:
            # the adapter closes a connection whose subscribe reply it never saw
            sub.closed = True
            self.forget(sub)
            sub.drop_server()
            raise
        return sub

    def forget(self, sub: ClientSubscription) -> None:
        for key, value in list(self._subs.items()):
            if value is sub:
                del self._subs[key]

    def connection_lost(self, *, reconnect: bool) -> None:
        self.held.clear()
        for sub in list(self._subs.values()):
            sub.connection_lost(reconnect=reconnect)

    def flush_held(self) -> None:
        held, self.held = self.held, []
        for sub, gen, channel, message in held:
            sub.release_held(gen, channel, message)

    async def close_all(self) -> None:
        for sub in list(self._subs.values()):
            await sub.close()
