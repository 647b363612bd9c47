"""``RedisPubSub``: PUBLISH/SUBSCRIBE, SPUBLISH/SSUBSCRIBE and keyspace ``expired`` events.

Subscriptions ride on dedicated connections (:mod:`uwsx_redis._driver_pubsub`), never on the
command pool: one for plain channels, one per node for sharded channels (a sharded channel
lives on the node owning its slot) and one per primary for key-expiry events (keyspace
notifications are node-local on a cluster; when a primary stays unreachable, the slot map is
read again and the expiry listeners follow the primaries it names, so a failover's new primary
is listened to, with the switch reported as a loss window). After a reconnect every channel is
subscribed again
and each affected subscription's ``on_loss`` receives the window in which messages may have
been missed; without ``on_loss`` the loss is logged, and the backend counts every window.

Plain publishes on a cluster always go to the same node, so the messages of one publisher keep
their order at every subscriber (cluster-bus fan-out from two nodes could reorder them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence

from uwsx import _runtime
from uwsx.errors import Unavailable, UnsupportedBackendError
from uwsx.ports.backend import Capability
from uwsx.ports.checks import check_key, check_value
from uwsx.ports.pubsub import ExpiryHandler, LossHandler, LossWindow, MessageHandler
from uwsx_redis._context import Context
from uwsx_redis._driver import DriverOptions, Node
from uwsx_redis._driver_exec import Op
from uwsx_redis._driver_pubsub import Listener, Moved
from uwsx_redis._subscriptions import RedisExpirySubscription, RedisSubscription, decode

__all__ = ["RedisExpirySubscription", "RedisPubSub", "RedisSubscription"]

log = logging.getLogger("uwsx.redis.pubsub")


class RedisPubSub:
    """The PubSub port (see :mod:`uwsx.ports.pubsub`) and the hub of its listeners."""

    def __init__(
        self,
        ctx: Context,
        caps: frozenset[Capability],
        options: DriverOptions,
        *,
        on_loss: LossHandler | None = None,
    ) -> None:
        self._ctx = ctx
        self._caps = caps
        self._options = options
        self._on_loss = on_loss
        self._subs: dict[tuple[str, bytes], dict[int, RedisSubscription]] = {}
        self._where: dict[tuple[str, bytes], Listener] = {}
        self._listeners: dict[tuple[str, str], Listener] = {}
        self._expiry: dict[int, RedisExpirySubscription] = {}
        self._all: dict[int, RedisSubscription] = {}
        self._tasks = _runtime.current().task_group("uwsx-redis-pubsub")
        self._following_primaries = False
        self._keyevent = f"__keyevent@{getattr(ctx.topology, 'db', 0)}__:expired".encode()
        #: how many loss windows subscriptions were told about (a metric)
        self.loss_windows = 0

    @property
    def max_message_bytes(self) -> int | None:
        return self._ctx.max_message_bytes

    # -- publishing --------------------------------------------------------------------
    def _publish_op(self, channel: str, message: str, sharded: bool) -> Op:
        check_key(channel, "channel")
        check_value(message, "message")
        limit = self._ctx.max_message_bytes
        if len(message) * 4 > limit and len(message.encode("utf-8")) > limit:
            raise ValueError(f"message is larger than max_message_bytes ({limit})")
        wire = self._ctx.keys.channel(channel)
        if sharded:
            self._need(Capability.SHARDED_PUBSUB, "sharded=True")
            return Op([("SPUBLISH", wire, message)], route=wire)
        return Op([("PUBLISH", wire, message)], node=self._ctx.topology.default())

    async def publish(self, channel: str, message: str, *, sharded: bool = False) -> None:
        await self._ctx.executor.run(self._publish_op(channel, message, sharded))

    async def publish_many(
        self, messages: Sequence[tuple[str, str]], *, sharded: bool = False
    ) -> None:
        ops = [self._publish_op(c, m, sharded) for c, m in messages]
        if ops:
            await self._ctx.executor.run_all(ops)

    # -- subscribing -------------------------------------------------------------------
    def _need(self, cap: Capability, what: str) -> None:
        if cap not in self._caps:
            raise UnsupportedBackendError(
                f"{what} needs the {cap.value} capability, which this server does not offer"
            )

    async def subscribe(
        self,
        channels: Iterable[str],
        handler: MessageHandler,
        *,
        sharded: bool = False,
        on_loss: LossHandler | None = None,
    ) -> RedisSubscription:
        if not callable(handler):
            raise TypeError("handler must be callable")
        if sharded:
            self._need(Capability.SHARDED_PUBSUB, "sharded=True")
        wanted = [check_key(c, "channel") for c in channels]
        sub = RedisSubscription(self, handler, sharded=sharded, on_loss=on_loss)
        self._all[id(sub)] = sub
        try:
            await sub.add(wanted)
        except BaseException:
            await sub.close()
            raise
        return sub

    async def subscribe_expired(
        self, prefix: str, handler: ExpiryHandler, *, on_loss: LossHandler | None = None
    ) -> RedisExpirySubscription:
        if not callable(handler):
            raise TypeError("handler must be callable")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        self._need(Capability.KEY_EXPIRY_EVENTS, "subscribe_expired")
        sub = RedisExpirySubscription(self, prefix, handler, on_loss)
        self._expiry[id(sub)] = sub
        try:
            listeners = [
                self._listener("expired", node, "subscribe")
                for node in self._ctx.topology.primaries()
            ]
            await asyncio.gather(*(lst.add([self._keyevent]) for lst in listeners))
        except BaseException:
            await sub.close()
            raise
        return sub

    def _kind(self, sub: RedisSubscription) -> str:
        return "ssubscribe" if sub.sharded else "subscribe"

    def _listener(self, role: str, node: Node | None, kind: str) -> Listener:
        key = (role, "*" if node is None else node.name)
        listener = self._listeners.get(key)
        if listener is None:
            if node is None:
                listener = Listener(
                    self,
                    self._ctx.topology.default(),
                    kind,
                    self._options,
                    role=role,
                    locate=self._locate_default,
                )
            else:
                listener = Listener(self, node, kind, self._options, role=role)
            self._listeners[key] = listener
        return listener

    async def _locate_default(self) -> Node:
        if self._ctx.topology.cluster:
            with contextlib.suppress(Exception):
                await self._ctx.topology.refresh()
        return self._ctx.topology.default()

    def _route(self, kind: str, wire: bytes) -> Listener:
        if kind == "subscribe":
            return self._listener("channels", None, kind)
        return self._listener("sharded", self._ctx.topology.node_for(wire), kind)

    async def attach(self, sub: RedisSubscription, channels: list[str]) -> None:
        kind = self._kind(sub)
        wires = [self._ctx.keys.channel(c).encode("utf-8") for c in channels]
        for channel, wire in zip(channels, wires, strict=True):
            sub._channels.add(channel)
            self._subs.setdefault((kind, wire), {})[id(sub)] = sub
        try:
            await self._place(kind, wires)
        except BaseException:
            await self.detach(sub, channels)
            raise

    async def _place(self, kind: str, wires: list[bytes], lost_since: float | None = None) -> None:
        for _ in range(5):
            groups: dict[Listener, list[bytes]] = {}
            for wire in wires:
                listener = self._where.get((kind, wire)) or self._route(kind, wire)
                self._where[(kind, wire)] = listener
                groups.setdefault(listener, []).append(wire)
            results = await asyncio.gather(
                *(lst.add(ws, lost_since=lost_since) for lst, ws in groups.items()),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            if not errors:
                return
            if not all(isinstance(e, Moved) for e in errors):
                raise next(e for e in errors if not isinstance(e, Moved))
            # a sharded channel was refused by a node that no longer owns its slot
            with contextlib.suppress(Exception):
                await self._ctx.topology.refresh()
            for wire in wires:
                placed = self._where.get((kind, wire))
                if placed is not None and wire not in placed.channels:
                    del self._where[(kind, wire)]
        raise Unavailable("sharded subscription kept moving between cluster nodes")

    async def detach(self, sub: RedisSubscription, channels: list[str]) -> None:
        kind = self._kind(sub)
        for channel in channels:
            sub._channels.discard(channel)
            wire = self._ctx.keys.channel(channel).encode("utf-8")
            subs = self._subs.get((kind, wire))
            if subs is not None:
                subs.pop(id(sub), None)
                if subs:
                    continue
                del self._subs[(kind, wire)]
            listener = self._where.pop((kind, wire), None)
            if listener is not None:
                await listener.remove([wire])

    def forget(self, sub: RedisSubscription) -> None:
        self._all.pop(id(sub), None)

    async def forget_expiry(self, sub: RedisExpirySubscription) -> None:
        self._expiry.pop(id(sub), None)
        if not self._expiry:
            for key in [k for k in self._listeners if k[0] == "expired"]:
                await self._listeners.pop(key).close()

    def connected(self, sub: RedisSubscription) -> bool:
        kind = self._kind(sub)
        for channel in sub._channels:
            listener = self._where.get((kind, self._ctx.keys.channel(channel).encode("utf-8")))
            if listener is None or not listener.healthy:
                return False
        return True

    def expiry_connected(self) -> bool:
        return all(lst.healthy for key, lst in self._listeners.items() if key[0] == "expired")

    # -- the listeners' hub ------------------------------------------------------------
    def deliver(self, listener: Listener, channel: bytes, data: bytes) -> None:
        if listener.role == "expired":
            key = decode(data)
            keys = self._ctx.keys
            if key.startswith(keys.prefix) and not keys.is_reserved(key):
                for sub in list(self._expiry.values()):
                    sub.expired(keys.strip(key))
            return
        subs = self._subs.get((listener.kind, channel))
        if not subs:
            return
        name, message = self._ctx.keys.strip(decode(channel)), decode(data)
        for subscription in list(subs.values()):
            subscription.deliver(name, message)

    def recovered(self, listener: Listener, channels: dict[bytes, float]) -> None:
        ended = _runtime.current().clock.wall()
        self.count_loss(LossWindow(min(channels.values()), ended))
        if listener.role == "expired":
            window = LossWindow(min(channels.values()), ended)
            for expiry in list(self._expiry.values()):
                expiry.lost(window)
            return
        started: dict[int, float] = {}
        owners: dict[int, RedisSubscription] = {}
        for wire, since in channels.items():
            for sub in self._subs.get((listener.kind, wire), {}).values():
                owners[id(sub)] = sub
                started[id(sub)] = min(since, started.get(id(sub), since))
        for key, sub in owners.items():
            sub.lost(LossWindow(started[key], ended))

    def dropped(self, listener: Listener, channels: list[bytes], since: float) -> None:
        for wire in channels:
            if self._where.get((listener.kind, wire)) is listener:
                del self._where[(listener.kind, wire)]
        wanted = [w for w in channels if (listener.kind, w) in self._subs]
        if wanted:
            self._tasks.spawn(self._reroute(listener.kind, wanted, since), name="uwsx-reroute")

    async def _reroute(self, kind: str, wires: list[bytes], since: float) -> None:
        with contextlib.suppress(Exception):
            await self._ctx.topology.refresh()
        try:
            await self._place(kind, wires, lost_since=since)
        except Exception:
            log.exception("could not re-subscribe %d moved channel(s)", len(wires))

    def unreachable(self, listener: Listener, since: float) -> None:
        if listener.role == "expired" and not self._following_primaries:
            self._following_primaries = True
            self._tasks.spawn(self._follow_primaries(since), name="uwsx-expiry-primaries")

    async def _follow_primaries(self, since: float) -> None:
        """Listen for expiry events on exactly the primaries of the (re-read) slot map; a new
        primary's listener reports the loss window from ``since``."""
        try:
            with contextlib.suppress(Exception):
                await self._ctx.topology.refresh()
            if not self._expiry:
                return
            primaries = {node.name: node for node in self._ctx.topology.primaries()}
            for key in [k for k in self._listeners if k[0] == "expired"]:
                if key[1] not in primaries:
                    await self._listeners.pop(key).close()
            added = [
                self._listener("expired", node, "subscribe")
                for name, node in primaries.items()
                if ("expired", name) not in self._listeners
            ]
            results = await asyncio.gather(
                *(lst.add([self._keyevent], lost_since=since) for lst in added),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, Exception):
                    log.warning("could not listen for expiry events on a new primary: %s", result)
        finally:
            self._following_primaries = False

    def health_changed(self, listener: Listener) -> None:
        log.debug(
            "pub/sub %s on %s healthy=%s", listener.role, listener.node.name, listener.healthy
        )

    def count_loss(self, window: LossWindow) -> None:
        self.loss_windows += 1
        if self._on_loss is not None:
            try:
                self._on_loss(window)
            except Exception:
                log.exception("backend on_loss callback failed")

    async def close(self) -> None:
        for sub in list(self._all.values()):
            sub._closed = True
        for expiry in list(self._expiry.values()):
            expiry._closed = True
        self._all.clear()
        self._expiry.clear()
        self._subs.clear()
        self._where.clear()
        listeners = list(self._listeners.values())
        self._listeners.clear()
        await asyncio.gather(*(lst.close() for lst in listeners), return_exceptions=True)
        await self._tasks.aclose()
