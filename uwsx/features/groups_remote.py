"""Server hooks and inbound events from other instances of :class:`~uwsx.features.groups.Group`.

Envelopes ``{instanceId, event, data}`` are validated before anything reaches a local client
(the original accepted anything from the channel): size, JSON object, string ``instanceId``,
event a name of 1..256 characters, and for role-filtered events a known role. Own envelopes
are dropped. ``close`` closes the group locally, ``__role_filtered`` is sent to local members
with that role, anything else is published on ``__group:<name>`` with ``relay=False``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from uwsx.features._envelope import EnvelopeValidator
from uwsx.features._json import loads
from uwsx.platform import Connection, Platform

if TYPE_CHECKING:
    from uwsx.features.groups import Group

__all__ = ["GroupHooks", "GroupInbound"]

log = logging.getLogger("uwsx.groups")

_ROLES = frozenset({"member", "admin", "viewer"})


def _name(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 256


class GroupInbound:
    """The event-channel handler of one group."""

    def __init__(self, group: Group, max_bytes: int) -> None:
        self._group = group
        self._validator = EnvelopeValidator(max_bytes=max_bytes)
        self.rejected = 0

    def on_message(self, channel: str, raw: str) -> None:
        group = self._group
        envelope = self._parse(raw)
        if envelope is None:
            self.rejected += 1
            return
        if envelope["instanceId"] == group.instance_id:
            return
        event, data = envelope["event"], envelope.get("data")
        try:
            self._dispatch(event, data)
        except Exception:
            log.exception("group %r: handling remote %r failed", group.name, event)

    def _parse(self, raw: str) -> dict[str, Any] | None:
        if not self._validator.accept_raw(raw):
            return None
        try:
            envelope = loads(raw)
        except ValueError:
            return None
        if not isinstance(envelope, dict):
            return None
        if not isinstance(envelope.get("instanceId"), str) or not _name(envelope.get("event")):
            return None
        if envelope["event"] == "__role_filtered":
            inner = envelope.get("data")
            if (
                not isinstance(inner, dict)
                or not _name(inner.get("event"))
                or inner.get("role") not in _ROLES
            ):
                return None
        return envelope

    def _dispatch(self, event: str, data: Any) -> None:
        group = self._group
        platform = group._platform
        if event == "close":
            group.closed_elsewhere()
            return
        if platform is None or group.closed:
            return
        if event == "__role_filtered":
            group.deliver_to_role(platform, data["role"], data["event"], data.get("data"))
            return
        platform.publish(group.topic, event, data, relay=False)


class GroupHooks:
    """Server hooks acting only on the group's topic ``__group:<name>``."""

    def __init__(self, group: Group) -> None:
        self._group = group

    async def subscribe(self, conn: Connection, topic: str, *, platform: Platform) -> None:
        if topic == self._group.topic:
            await self._group.join(conn, platform)

    async def unsubscribe(self, conn: Connection, topic: str, *, platform: Platform) -> None:
        if topic == self._group.topic:
            await self._group.leave(conn, platform)

    async def close(self, conn: Connection, *, platform: Platform) -> None:
        """Leave; if storage cannot confirm it, drop the member locally anyway (its entry
        expires within ``member_ttl``)."""
        await self._group.leave(conn, platform)
        await self._group._drop_local(conn, platform)
