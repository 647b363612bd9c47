"""Members of :class:`~uwsx.features.groups.Group`: options, entry encoding, the heartbeat,
and metadata encoding.

A member entry is JSON ``{role, instanceId, ts}`` (``ts`` in wall-clock milliseconds, kept for
diagnostics and compatibility with the original layout; liveness comes from the field's own
deadline). Metadata values are stored as text: strings as they are, everything else as JSON
(``1`` → ``"1"``, ``True`` → ``"true"``), so a read returns every value as a string, as the
original's hash did.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
        await group._clock.sleep(interval)
        await beat(group)


async def beat(group: Group) -> None:
    """One heartbeat: members whose connection closed are removed and announced as leaves;
    the others' entries are re-put with a fresh deadline, under the group's write lock (a leave
    in flight can never be undone by it). Skipped while the breaker is not healthy; no backend
    call at all without local members."""
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
    async with group._write_lock:
        now = group._clock.wall()
        items = {m.id: m.encode(group.instance_id, now) for m in members.values()}
        if not items:
            return
        try:
            await group._kv.map_put_many(group._members_key, items, ttl=group.member_ttl)
        except Exception as exc:
            log.warning("group %r: heartbeat failed: %s", group.name, exc)


def _alive(conn: Connection) -> bool:
    try:
        conn.buffered_amount()
    except Exception:
        return False
    return True
