"""Members of :class:`~uwsx.features.groups.Group`: options, entry encoding, the heartbeat,
and metadata encoding.

A member entry is JSON ``{role, instanceId, ts}`` (``ts`` in wall-clock milliseconds, kept for
diagnostics and compatibility with the original layout; liveness comes from the field's own
deadline). Metadata values are stored as text: strings as they are, everything else as JSON
(``1`` → ``"1"``, ``True`` → ``"true"``), so a read returns every value as a string, as the
original's hash did.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uwsx._runtime import buggify
from uwsx.features._json import dumps, loads
from uwsx.platform import Connection

if TYPE_CHECKING:
    from uwsx.features.groups import Group

__all__ = [
    "GroupMember",
    "beat",
    "beat_loop",
    "check_options",
    "decode_member",
    "encode_meta",
    "heartbeat_interval",
]

log = logging.getLogger("uwsx.groups")

_ROLES = frozenset({"member", "admin", "viewer"})


@dataclass(frozen=True, slots=True, eq=False)
class GroupMember:
    """A local member: its storage field ``id``, connection and role."""

    id: str
    conn: Connection
    role: str

    def encode(self, instance_id: str, wall: float) -> str:
        return dumps({"role": self.role, "instanceId": instance_id, "ts": int(wall * 1000)})


def decode_member(value: str) -> str | None:
    """The role of a stored member entry, or None when it is corrupt."""
    try:
        decoded = loads(value)
    except ValueError:
        return None
    if not isinstance(decoded, dict):
        return None
    role = decoded.get("role")
    return role if isinstance(role, str) and role in _ROLES else None


def encode_meta(meta: Mapping[str, Any]) -> dict[str, str]:
    """Metadata as a map of text values.

    :raises TypeError: a key is not a non-empty string or a value is not JSON-serialisable.
    """
    out: dict[str, str] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"meta keys must be non-empty strings, got {key!r}")
        try:
            out[key] = value if isinstance(value, str) else dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"meta value for {key!r} is not JSON-serialisable: {exc}") from exc
    return out


def heartbeat_interval(member_ttl: float) -> float:
    """Seconds between member refreshes: three refreshes per ``member_ttl``, so one lost
    heartbeat never lets a live member expire. (The original ran every 5 s for any TTL of
    15 s or more to drive a stale-entry sweep; per-field deadlines make that sweep
    unnecessary.)"""
    return member_ttl / 3


def check_options(
    name: object,
    *,
    max_members: int | float | None,
    member_ttl: object,
    callbacks: Mapping[str, Callable[..., Any] | None],
    meta: object,
) -> tuple[int | None, float]:
    """Validate ``Group`` options; returns ``(max_members or None, member_ttl)``.

    :raises ValueError: bad name, capacity or TTL. :raises TypeError: bad callback or meta.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    if max_members == math.inf:
        max_members = None
    if max_members is not None and (
        isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1
    ):
        raise ValueError("max_members must be a positive integer, math.inf or None")
    if (
        isinstance(member_ttl, bool)
        or not isinstance(member_ttl, int | float)
        or not 0 < member_ttl < math.inf
    ):
        raise ValueError("member_ttl must be a positive number of seconds")
    for what, cb in callbacks.items():
        if cb is not None and not callable(cb):
            raise TypeError(f"{what} must be callable")
    if meta is not None and not isinstance(meta, Mapping):
        raise TypeError("meta must be a mapping")
    return max_members, float(member_ttl)


async def beat_loop(group: Group) -> None:
    """Heartbeats while the group has local members (restarted by the next join)."""
    interval = heartbeat_interval(group.member_ttl)
    while group._members:
        delay = interval
        if buggify("groups.heartbeat_late"):
            # A loaded loop runs the timer late; two refreshes still fit in member_ttl.
            delay += interval / 2
        await group._clock.sleep(delay)
        await beat(group)


async def beat(group: Group) -> None:
    """One heartbeat: members whose connection closed are removed and announced as leaves;
    the others' entries get a fresh deadline, under the group's write lock (a leave in flight
    can never be undone by it). Skipped while the breaker is not healthy; no backend call at
    all without local members.

    In a capped group each member is refreshed with its own bounded put (all issued in one
    tick: one pipelined round trip on auto-pipelining adapters), so a member whose entry
    expired meanwhile (a pause longer than ``member_ttl``) is re-admitted only while the group
    has room. A member refused as full has left: it is dropped locally and announced like any
    leave (``leave`` frame, relay, ``on_leave``). A refresh finding the group closed closes it
    here (the close notification may have been missed). An unbounded group has no cap to
    protect: its members are re-put in one write."""
    members = group._members
    for conn in [c for c in members if not _alive(c)]:
        member = members.pop(conn)
        try:
            await group._kv.map_remove(group._members_key, member.id)
        except Exception as exc:
            log.debug("group %r: removing a dead member failed: %s", group.name, exc)
        if group._platform is not None:
            await group._announce_leave(conn, member, group._platform)
    if not members or (group._breaker is not None and not group._breaker.is_healthy):
        return
    if buggify("groups.heartbeat_yield"):
        # Joins, leaves and remote events run between the cleanup and the refresh.
        await group._clock.sleep(0)
    async with group._write_lock:
        snapshot = list(members.items())
        if not snapshot:
            return
        if group.max_members is None:
            await _refresh_unbounded(group, [m for _, m in snapshot])
            return
        statuses = await _refresh_bounded(group, [m for _, m in snapshot])
        evicted: list[tuple[Connection, GroupMember]] = []
        for (conn, member), status in zip(snapshot, statuses, strict=True):
            # A leave or close hook may have dropped it while the refresh was in flight.
            if status == "full" and members.get(conn) is member:
                del members[conn]
                evicted.append((conn, member))
    if "closed" in statuses and not group.closed:
        group.closed_elsewhere()
        return
    if evicted:
        log.info("group %r: %d expired member(s) found the group full", group.name, len(evicted))
    platform = group._platform
    for conn, member in evicted:
        if platform is not None:
            await group._announce_leave(conn, member, platform)


async def _refresh_unbounded(group: Group, members: list[GroupMember]) -> None:
    now = group._clock.wall()
    items = {m.id: m.encode(group.instance_id, now) for m in members}
    try:
        await group._kv.map_put_many(group._members_key, items, ttl=group.member_ttl)
    except Exception as exc:
        log.warning("group %r: heartbeat failed: %s", group.name, exc)


async def _refresh_bounded(group: Group, members: list[GroupMember]) -> list[str | None]:
    """Refresh each member with a bounded put; its status, or None when the put failed (the
    member is kept: a lost refresh is retried by the next heartbeat)."""
    now = group._clock.wall()
    results = await asyncio.gather(
        *(
            group._kv.map_put_bounded(
                group._members_key,
                m.id,
                m.encode(group.instance_id, now),
                max_fields=group.max_members,
                ttl=group.member_ttl,
                unless_key=group._closed_key,
            )
            for m in members
        ),
        return_exceptions=True,
    )
    statuses: list[str | None] = []
    failed: BaseException | None = None
    for result in results:
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            failed = result
            statuses.append(None)
        else:
            statuses.append(result.status)
    if failed is not None:
        log.warning("group %r: heartbeat failed: %s", group.name, failed)
    return statuses


def _alive(conn: Connection) -> bool:
    try:
        conn.buffered_amount()
    except Exception:
        return False
    return True
