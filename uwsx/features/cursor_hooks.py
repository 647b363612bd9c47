"""Server hooks of :class:`~uwsx.features.cursor.Cursor`: snapshots on subscribe, client
position messages, and removal when a connection closes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from uwsx.platform import Connection, Platform

if TYPE_CHECKING:
    from uwsx.features.cursor import Cursor

__all__ = ["TOPIC_PREFIX", "CursorHooks"]

log = logging.getLogger("uwsx.cursor")

#: Client topics are ``__cursor:<topic>``.
TOPIC_PREFIX = "__cursor:"


class CursorHooks:
    """Server hooks (usable when taken off the object)."""

    def __init__(self, cursor: Cursor) -> None:
        self._cursor = cursor

    async def subscribe(self, conn: Connection, topic: str, *, platform: Platform) -> None:
        """A subscription to ``__cursor:<topic>`` gets a snapshot."""
        if isinstance(topic, str) and topic.startswith(TOPIC_PREFIX) and len(topic) > 9:
            await self._cursor.snapshot(conn, topic[len(TOPIC_PREFIX) :], platform)

    def message(self, conn: Connection, data: Any, *, platform: Platform) -> None:
        """Apply ``{"type": "cursor", "topic": ..., "data": ...}`` client messages; anything
        else (or an invalid topic) is ignored."""
        if not isinstance(data, Mapping) or data.get("type") != "cursor" or "data" not in data:
            return
        topic = data.get("topic")
        if not isinstance(topic, str) or not topic or topic.startswith("__"):
            return
        try:
            self._cursor.update(conn, topic, data["data"], platform)
        except (TypeError, ValueError) as exc:
            log.debug("cursor: ignored client update: %s", exc)

    async def close(self, conn: Connection, *, platform: Platform) -> None:
        await self._cursor.remove(conn, platform)
