"""Local state of :class:`~uwsx.features.cursor.Cursor`: per connection, per topic, per topic
throttle window, and the stored entry format (JSON ``{user, data, ts, v}`` under the
connection's field ``<instance_id>:<n>``; ``v`` is the write's version, see
:mod:`uwsx.features.cursor_order`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from uwsx.features._json import dumps, loads
from uwsx.platform import Platform

__all__ = ["ConnCursor", "CursorEntry", "CursorThrottle", "decode_entries", "decode_versioned"]


@dataclass(eq=False)
class CursorEntry:
    """One connection's cursor on one topic."""

    key: str
    user: Any
    data: Any = None
    platform: Platform | None = None
    #: Monotonic time of the last broadcast (``-inf``: never, so the first one leads).
    last: float = float("-inf")
    trailing: asyncio.Task[None] | None = None
    #: Queued writes (and relays) of this entry, done once stored and relayed or failed.
    writes: set[asyncio.Future[None]] = field(default_factory=set)
    alive: bool = True

    def frame(self) -> dict[str, Any]:
        return {"key": self.key, "user": self.user, "data": self.data}

    def stored(self, wall: float, version: int) -> str:
        return dumps({"user": self.user, "data": self.data, "ts": int(wall * 1000), "v": version})

    def track(self, write: asyncio.Future[None]) -> None:
        self.writes.add(write)
        write.add_done_callback(self.writes.discard)

    def cancel_trailing(self) -> None:
        if self.trailing is not None:
            self.trailing.cancel()
            self.trailing = None

    def kill(self) -> None:
        """No broadcast of this entry may start any more."""
        self.alive = False
        self.cancel_trailing()

    async def settled(self) -> None:
        """Wait for the writes (and relays) already started for this entry."""
        if self.writes:
            await asyncio.gather(*list(self.writes), return_exceptions=True)


@dataclass(eq=False)
class ConnCursor:
    """A connection: its storage key, public user data (computed once) and topics."""

    key: str
    user: Any
    topics: dict[str, CursorEntry] = field(default_factory=dict)


@dataclass(eq=False)
class CursorThrottle:
    """A topic: how many local entries it has, and its coalescing window."""

    members: int = 0
    last: float = float("-inf")
    dirty: dict[str, CursorEntry] = field(default_factory=dict)
    timer: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        self.dirty.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def decode_entries(
    items: Mapping[str, str], *, exclude_prefix: str | None = None
) -> list[dict[str, Any]]:
    """``[{key, user, data}]`` from a topic map, skipping corrupt values and fields starting
    with ``exclude_prefix``."""
    return [frame for frame, _ in decode_versioned(items, exclude_prefix=exclude_prefix)]


def decode_versioned(
    items: Mapping[str, str], *, exclude_prefix: str | None = None
) -> list[tuple[dict[str, Any], int | None]]:
    """``({key, user, data}, version)`` pairs from a topic map (version None for entries
    written without one), skipping corrupt values and fields starting with ``exclude_prefix``."""
    out = []
    for key, raw in items.items():
        if exclude_prefix is not None and key.startswith(exclude_prefix):
            continue
        try:
            value = loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict) and "data" in value:
            frame = {"key": key, "user": value.get("user"), "data": value["data"]}
            out.append((frame, version_of(value.get("v"))))
    return out


def version_of(value: object) -> int | None:
    """A valid version (a non-negative integer) or None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
