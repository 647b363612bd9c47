"""``Group``: a named broadcast group with roles, a capacity and metadata, across instances.

Membership lives in one KV map per group whose fields (``<instance_id>:<n>``) carry their own
deadline (``member_ttl``), refreshed by each instance's heartbeat for its live local members;
sockets stay local and group events travel over a pub/sub channel.

Guarantee: the number of live members never exceeds ``max_members``, even under concurrent
joins on many instances (admission is one atomic bounded put that also refuses a closed group)
and when an instance stalls longer than ``member_ttl`` (a GC pause): the heartbeat refreshes
each member of a capped group with the same bounded put, so a member whose entry expired is
re-admitted only while there is room; otherwise it has left (dropped locally, ``leave`` frame,
relay and ``on_leave``, as for any leave). A member whose instance crashed stops counting
within ``member_ttl``. A local member whose
connection closed (or whose leave failed while the backend was down) is dropped from local
state and never written again, so it cannot live on as a ghost (the original kept it and its
heartbeat rewrote it forever, and a heartbeat racing a leave could re-create a removed member).

Invariants (Checked by: ``uwsx_sim`` groups checker):

* GR-1 live members ≤ ``max_members`` at every instant, pauses included.
* GR-2 after ``dissolve`` no join succeeds anywhere (the closed flag is checked atomically with
  the admission).
* GR-3 a member removed by ``leave`` is never written again (no heartbeat resurrection).
* GR-4 a crashed instance's members stop counting within ``member_ttl``.

Keys (one co-location tag per group, :func:`uwsx.ports.colocate`): ``group:{name}:members``
(map), ``group:{name}:closed`` (``"1"``, no TTL), ``group:{name}:meta`` (map). Channel
``group:{name}:events`` carries ``{instanceId, event, data}``. Clients see topic
``__group:<name>`` with events ``join {role}``, ``leave {role}``, ``members [{role}...]``
(unicast on join), ``close None`` and application events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from uwsx import _runtime
from uwsx.connect import require
from uwsx.errors import CircuitBrokenError
from uwsx.features._envelope import DEFAULT_MAX_ENVELOPE_BYTES
from uwsx.features._json import dumps
from uwsx.features.groups_members import GroupMember, beat, beat_loop, check_options, decode_member
from uwsx.features.groups_meta import GroupMeta
from uwsx.features.groups_remote import GroupHooks, GroupInbound
from uwsx.metrics import NULL_METRICS, MetricsLike
from uwsx.platform import Connection, Platform
from uwsx.ports.backend import Backend
from uwsx.ports.checks import colocate
from uwsx.ports.kv import KV
from uwsx.ports.pubsub import PubSub, Subscription
from uwsx.reliability.breaker import CircuitBreaker, with_breaker

__all__ = ["MAX_GROUPS_LOCAL_MEMBERS", "RESERVED_EVENTS", "ROLES", "Group", "GroupHooks"]

log = logging.getLogger("uwsx.groups")

ROLES = ("member", "admin", "viewer")
#: Events the group itself uses on ``__group:<name>``; ``publish`` refuses them.
RESERVED_EVENTS = frozenset({"join", "leave", "members", "close", "__role_filtered"})
#: Local members per group object; beyond it a join is treated like a full group.
MAX_GROUPS_LOCAL_MEMBERS = 10_000_000

Callback = Callable[[Connection, str], None]


class Group:
    """A broadcast group (see the module docstring).

    :param backend: a backend with the ``kv`` and ``pubsub`` ports.
    :param name: the group name (non-empty).
    :param max_members: capacity (positive integer), ``None``/``math.inf`` for unbounded.
    :param meta: initial metadata, merged into the meta map once (values stored as text).
    :param member_ttl: seconds a member entry lives without a heartbeat (> 0).
    :param on_join: ``(conn, role)`` after a local join.
    :param on_leave: ``(conn, role)`` after a local leave.
    :param on_full: ``(conn, role)`` when a join is refused for capacity.
    :param on_close: ``()`` once the group is closed (locally or by another instance).
    :param max_envelope_bytes: largest received envelope accepted.
    """

    def __init__(
        self,
        backend: Backend,
        name: str,
        *,
        max_members: int | float | None = None,
        meta: Mapping[str, Any] | None = None,
        member_ttl: float = 120.0,
        on_join: Callback | None = None,
        on_leave: Callback | None = None,
        on_full: Callback | None = None,
        on_close: Callable[[], None] | None = None,
        max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        breaker: CircuitBreaker | None = None,
        metrics: MetricsLike | None = None,
    ) -> None:
        max_members, member_ttl = check_options(
            name,
            max_members=max_members,
            member_ttl=member_ttl,
            callbacks={
                "on_join": on_join,
                "on_leave": on_leave,
                "on_full": on_full,
                "on_close": on_close,
            },
            meta=meta,
        )
        require(backend, "Group", ports=("kv", "pubsub"))
        kv, pubsub = backend.kv, backend.pubsub
        assert kv is not None
        assert pubsub is not None
        self._kv: KV = kv
        self._pubsub: PubSub = pubsub
        self.name = name
        self.topic = "__group:" + name
        tag = colocate(name)
        self._members_key = f"group:{tag}:members"
        self._closed_key = f"group:{tag}:closed"
        self._meta_key = f"group:{tag}:meta"
        self.channel = f"group:{tag}:events"
        self.max_members: int | None = max_members
        self.member_ttl = float(member_ttl)
        self._on_join, self._on_leave, self._on_full = on_join, on_leave, on_full
        self._on_close = on_close
        self._breaker = breaker
        rt = _runtime.current()
        self._clock = rt.clock
        self.instance_id = rt.ids.hex(8)
        self._tasks = rt.task_group(f"Group({name})")
        self._members: dict[Connection, GroupMember] = {}
        self._joining: dict[Connection, asyncio.Future[bool]] = {}
        self._serial = 0
        self._closed = False
        self._close_notified = False
        self._subscription: Subscription | None = None
        self._sub_lock = asyncio.Lock()
        # Heartbeat writes and leave removals of member fields are serialised so a heartbeat
        # can never re-create a member that a concurrent leave just removed.
        self._write_lock = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None
        self._platform: Platform | None = None
        self._meta = GroupMeta(kv, self._meta_key, meta, breaker=breaker, tasks=self._tasks)
        self._inbound = GroupInbound(self, max_envelope_bytes)
        self.hooks = GroupHooks(self)
        m = metrics or NULL_METRICS
        self._m_joins = m.counter("group_joins_total", "Group joins", ("group",))
        self._m_rejected = m.counter(
            "group_joins_rejected_total", "Joins rejected (full)", ("group",)
        )
        self._m_leaves = m.counter("group_leaves_total", "Group leaves", ("group",))
        self._m_publishes = m.counter("group_publishes_total", "Group publishes", ("group",))
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop yet: start() or the first join writes the initial metadata
        else:
            self._meta.start()

    # -- lifecycle -------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once the group was dissolved (here or on another instance)."""
        return self._closed

    async def start(self) -> None:
        """Write the initial metadata and subscribe to group events (optional: the first
        join does both, without waiting for the metadata)."""
        await self._meta.written()
        await self._ensure_subscription()

    async def close(self) -> None:
        """Stop the heartbeat and the event subscription (members are not removed; their
        entries expire within ``member_ttl``). Idempotent, never raises."""
        await self._tasks.aclose()
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                await subscription.close()
            except Exception as exc:
                log.debug("group %r: unsubscribe failed: %s", self.name, exc)

    async def __aenter__(self) -> Group:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _ensure_subscription(self) -> None:
        if self._subscription is not None:
            return
        async with self._sub_lock:
            if self._subscription is None:
                self._subscription = await with_breaker(
                    self._breaker,
                    lambda: self._pubsub.subscribe([self.channel], self._inbound.on_message),
                )

    # -- membership -------------------------------------------------------------------
    async def join(self, conn: Connection, platform: Platform, role: str = "member") -> bool:
        """Add ``conn`` with ``role``; False when the group is full or closed.

        :raises ValueError: unknown role.
        :raises CircuitBrokenError: the breaker is open (nothing changed).
        :raises RuntimeError: a failed join could not be undone (orphaned member entry).
        """
        if self._closed:
            return False
        if conn in self._members:
            return True
        if role not in ROLES:
            raise ValueError(f'group "{self.name}": invalid role "{role}"')
        pending = self._joining.get(conn)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._joining[conn] = future
        try:
            result = await self._join(conn, platform, role)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved here: only waiters re-raise it
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._joining[conn]

    async def _join(self, conn: Connection, platform: Platform, role: str) -> bool:
        self._platform = platform
        self._meta.start()
        await self._ensure_subscription()
        self._serial += 1
        member = GroupMember(f"{self.instance_id}:{self._serial}", conn, role)
        put = await with_breaker(
            self._breaker,
            lambda: self._kv.map_put_bounded(
                self._members_key,
                member.id,
                member.encode(self.instance_id, self._clock.wall()),
                max_fields=self.max_members,
                ttl=self.member_ttl,
                unless_key=self._closed_key,
            ),
        )
        if _runtime.buggify("groups.join_reply_late"):
            # The put's reply is handled late: a close, leave or heartbeat runs first.
            await self._clock.sleep(0)
        if put.status == "closed":
            self._closed = True
            return False
        if self._closed:  # closed by another instance while the put was in flight
            await self._rollback(member, "group closed during join")
            return False
        if put.status == "full" or len(self._members) >= MAX_GROUPS_LOCAL_MEMBERS:
            if put.status == "stored":
                await self._rollback(member, "local member cap reached")
            self._m_rejected.inc(group=self.name)
            self._call(self._on_full, conn, role)
            return False
        self._members[conn] = member
        try:
            conn.subscribe(self.topic)
        except Exception:
            del self._members[conn]
            await self._rollback(member, "connection closed during join")
            return False
        platform.publish(self.topic, "join", {"role": role})
        await self._relay("join", {"role": role})
        # The bounded put returned the live members: no second read for the snapshot.
        roles = [r for r in (decode_member(v) for v in put.items.values()) if r is not None]
        platform.send(conn, self.topic, "members", [{"role": r} for r in roles])
        self._m_joins.inc(group=self.name)
        self._ensure_heartbeat()
        self._call(self._on_join, conn, role)
        return True

    async def _rollback(self, member: GroupMember, why: str) -> None:
        try:
            await self._kv.map_remove(self._members_key, member.id)
        except Exception as exc:
            raise RuntimeError(
                f'group "{self.name}": join rollback failed ({why}), orphaned member in '
                f"storage: {exc}"
            ) from exc

    async def leave(self, conn: Connection, platform: Platform) -> None:
        """Remove ``conn``. When the backend is unavailable the member is kept (call again, or
        rely on ``hooks.close`` which drops it locally)."""
        member = self._members.get(conn)
        if member is None:
            return
        breaker = self._breaker
        if breaker is not None:
            try:
                breaker.guard()
            except CircuitBrokenError:
                return
        async with self._write_lock:
            if self._members.get(conn) is not member:
                if breaker is not None:
                    breaker.success()  # nothing to do: release the probe
                return
            try:
                await self._kv.map_remove(self._members_key, member.id)
            except Exception as exc:
                if breaker is not None:
                    breaker.failure(exc)
                return
            # Still under the lock: the next heartbeat snapshot no longer contains it.
            del self._members[conn]
        if breaker is not None:
            breaker.success()
        await self._announce_leave(conn, member, platform)

    async def _drop_local(self, conn: Connection, platform: Platform) -> None:
        """Forget a member whose storage removal failed (closed connection, backend down)."""
        member = self._members.pop(conn, None)
        if member is not None:
            await self._announce_leave(conn, member, platform)

    async def _announce_leave(self, conn: Connection, member: GroupMember, p: Platform) -> None:
        try:
            conn.unsubscribe(self.topic)
        except Exception:
            pass
        self._m_leaves.inc(group=self.name)
        p.publish(self.topic, "leave", {"role": member.role})
        await self._relay("leave", {"role": member.role})
        self._call(self._on_leave, conn, member.role)

    # -- messaging ---------------------------------------------------------------------
    async def publish(
        self, platform: Platform, event: str, data: Any = None, role: str | None = None
    ) -> None:
        """Broadcast to every member (or only to members with ``role``) on every instance.
        A no-op once closed.

        :raises ValueError: reserved event name or unknown role.
        :raises TypeError: ``data`` is not JSON-serialisable (nothing was delivered).
        """
        if self._closed:
            return
        if not isinstance(event, str) or not event or event in RESERVED_EVENTS:
            raise ValueError(f'group "{self.name}": event must be a non-reserved name')
        if role is not None and role not in ROLES:
            raise ValueError(f'group "{self.name}": invalid role "{role}"')
        dumps(data)  # fail before anything is delivered
        self._m_publishes.inc(group=self.name)
        if role is None:
            platform.publish(self.topic, event, data)
            await self._relay(event, data)
            return
        self.deliver_to_role(platform, role, event, data)
        await self._relay("__role_filtered", {"event": event, "data": data, "role": role})

    def deliver_to_role(self, platform: Platform, role: str, event: str, data: Any) -> None:
        for member in list(self._members.values()):
            if member.role == role:
                platform.send(member.conn, self.topic, event, data)

    def send(self, platform: Platform, conn: Connection, event: str, data: Any = None) -> int:
        """Send to one local member. :raises ValueError: ``conn`` is not a member."""
        if conn not in self._members:
            raise ValueError(f'group "{self.name}": connection is not a member')
        return platform.send(conn, self.topic, event, data)

    async def _relay(self, event: str, data: Any) -> None:
        envelope = dumps({"instanceId": self.instance_id, "event": event, "data": data})
        try:
            await self._pubsub.publish(self.channel, envelope)
        except Exception as exc:
            log.warning("group %r: relay of %r failed: %s", self.name, event, exc)

    # -- queries -----------------------------------------------------------------------
    def local_members(self) -> list[GroupMember]:
        return list(self._members.values())

    def has(self, conn: Connection) -> bool:
        return conn in self._members

    async def count(self) -> int:
        """Live members on every instance."""
        return await with_breaker(self._breaker, lambda: self._kv.map_count(self._members_key))

    async def get_meta(self) -> dict[str, str]:
        """The metadata map (values as text); retries a failed initial write first."""
        return await self._meta.get()

    async def set_meta(self, meta: Mapping[str, Any]) -> None:
        """Merge ``meta`` into the metadata (an empty mapping deletes it all)."""
        await self._meta.set(meta)

    # -- dissolving --------------------------------------------------------------------
    async def dissolve(self, platform: Platform) -> None:
        """Close the group everywhere: later joins fail on every instance, members are
        dropped. Calling it again repeats the cluster notification.

        :raises CircuitBrokenError: the breaker is open (the group stays open).
        """
        await with_breaker(self._breaker, lambda: self._kv.set(self._closed_key, "1"))
        self._closed = True
        platform.publish(self.topic, "close", None)
        self.drop_all_local()
        self._notify_closed()
        async with self._write_lock:  # after any in-flight heartbeat write, never before
            await with_breaker(self._breaker, lambda: self._kv.delete(self._members_key))
        envelope = dumps({"instanceId": self.instance_id, "event": "close", "data": None})
        await with_breaker(self._breaker, lambda: self._pubsub.publish(self.channel, envelope))

    def closed_elsewhere(self) -> None:
        """The group was dissolved by another instance: close it here (``close`` frame with
        ``relay=False``, local members dropped, ``on_close``)."""
        self._closed = True
        if self._platform is not None:
            self._platform.publish(self.topic, "close", None, relay=False)
        self.drop_all_local()
        self._notify_closed()

    def drop_all_local(self) -> None:
        members = list(self._members.values())
        self._members.clear()
        for member in members:
            try:
                member.conn.unsubscribe(self.topic)
            except Exception:
                continue

    def _notify_closed(self) -> None:
        if not self._close_notified:
            self._close_notified = True
            if self._on_close is not None:
                try:
                    self._on_close()
                except Exception:
                    log.exception("group %r: on_close callback failed", self.name)

    def _call(self, cb: Callback | None, conn: Connection, role: str) -> None:
        if cb is None:
            return
        try:
            cb(conn, role)
        except Exception:
            log.exception("group %r: callback failed", self.name)

    # -- heartbeat ---------------------------------------------------------------------
    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = self._tasks.spawn(beat_loop(self), name="uwsx-group-heartbeat")

    async def beat(self) -> None:
        """One heartbeat now (see :func:`uwsx.features.groups_members.beat`)."""
        await beat(self)
