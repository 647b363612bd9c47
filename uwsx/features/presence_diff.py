"""Presence bookkeeping per topic, the per-tick diff buffer, and reconciliation.

Every topic with a local audience (joined connections or sync observers) has a
:class:`TopicState`. Its ``view`` is what this instance's clients of the topic have been told
(``presence_state`` snapshots plus every ``presence_diff`` since). Each read of the topic map
(a join's or sync's snapshot, every heartbeat) is *absorbed*: users in storage but not in the
view become join diffs, users in the view but gone from storage become leave diffs. That is how
remote clients learn that a crashed instance's users left (their fields expire after ``ttl``,
and the next heartbeat read notices) and how missed pub/sub events are repaired.

Absorbing never contradicts a newer event: every diff marks its key with an increasing
operation number, and a read ignores keys marked after it started (no resurrection of a user
whose leave arrived while the read was in flight). Local users are never absorbed: their own
join/leave path announces them (only a local user missing from the view, e.g. after a
whole-map expiry, is announced again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from uwsx.metrics import MetricsLike
from uwsx.platform import Connection, Platform

__all__ = ["DiffBuffer", "Op", "TopicState"]

log = logging.getLogger("uwsx.presence")

Op = Literal["join", "leave"]


@dataclass(eq=False)
class TopicState:
    """One topic's local presence."""

    #: user key -> connection -> public data, for every local connection (staged or committed).
    conns: dict[str, dict[Connection, Any]] = field(default_factory=dict)
    #: committed local users: user key -> (data, wall time written); the heartbeat keeps them.
    held: dict[str, tuple[Any, float]] = field(default_factory=dict)
    observers: set[Connection] = field(default_factory=set)
    view: dict[str, Any] = field(default_factory=dict)
    #: False until the first read: the first snapshot is adopted without diffs.
    ready: bool = False
    touched: dict[str, int] = field(default_factory=dict)
    reading: int = 0
    #: user key -> instance id of the latest remote join/update event for it.
    joined_by: dict[str, str] = field(default_factory=dict)
    #: user key -> serial of the latest storage write a local join issued for it.
    put_at: dict[str, int] = field(default_factory=dict)

    @property
    def has_audience(self) -> bool:
        return bool(self.conns or self.observers)

    def absorb(self, current: Mapping[str, Any], mark: int) -> list[tuple[str, Op, Any]]:
        """Diffs bringing the view in line with ``current`` (read after operation ``mark``)."""

        def fresh(key: str) -> bool:
            return self.touched.get(key, -1) <= mark

        if not self.ready:
            self.ready = True
            for key, data in current.items():
                if fresh(key) and key not in self.conns:
                    self.view[key] = data
            return []
        out: list[tuple[str, Op, Any]] = []
        for key, data in current.items():
            if not fresh(key):
                continue
            if key in self.conns:
                held = self.held.get(key)
                if held is not None and key not in self.view:
                    out.append((key, "join", held[0]))
            elif key not in self.view or self.view[key] != data:
                out.append((key, "join", data))
        for key, data in self.view.items():
            if key not in current and key not in self.conns and fresh(key):
                out.append((key, "leave", data))
        return out

    def touch(self, key: str, serial: int) -> None:
        """Record that ``key`` was decided at ``serial``: reads in flight ignore it."""
        if self.reading:
            self.touched[key] = serial

    def shows(self, key: str, data: Any) -> bool:
        """The view already shows ``key`` with ``data``."""
        return key in self.view and self.view[key] == data

    def apply(self, key: str, op: Op, data: Any, serial: int) -> None:
        self.touch(key, serial)
        if op == "join":
            self.view[key] = data
        else:
            self.view.pop(key, None)
            self.joined_by.pop(key, None)


class DiffBuffer:
    """Coalesces ``presence_diff`` entries per topic: the latest op per key wins until the
    buffer is flushed (once per event-loop tick, or by :meth:`flush`)."""

    def __init__(self, metrics: MetricsLike) -> None:
        self._pending: dict[str, dict[str, tuple[Op, Any]]] = {}
        self._platform: Platform | None = None
        self._scheduled = False
        self._held = False
        self._map_topic = metrics.map_topic
        self._m_frames = metrics.counter(
            "presence_diff_frames_total", "presence_diff frames published", ("topic",)
        )
        self._m_coalesced = metrics.counter(
            "presence_diff_coalesced_total", "Buffered diff entries overwritten", ("topic",)
        )

    def add(self, platform: Platform, topic: str, key: str, op: Op, data: Any) -> None:
        entries = self._pending.setdefault(topic, {})
        if key in entries:
            self._m_coalesced.inc(topic=self._map_topic(topic))
        entries[key] = (op, data)
        self._platform = platform
        if not self._scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                return  # no loop: flushed by the next flush() call
            self._scheduled = True

    def hold(self) -> None:
        """Keep pending entries unpublished until :meth:`release` (while a clear decides
        whether to drop them)."""
        self._held = True

    def release(self) -> None:
        self._held = False
        if self._pending:
            self.flush()

    def flush(self) -> None:
        """Publish one ``presence_diff`` per pending topic now (``relay=False``)."""
        self._scheduled = False
        if self._held:
            return
        pending, self._pending = self._pending, {}
        platform = self._platform
        if platform is None:
            return
        for topic, entries in pending.items():
            joins = {k: d for k, (op, d) in entries.items() if op == "join"}
            leaves = {k: d for k, (op, d) in entries.items() if op == "leave"}
            try:
                platform.publish(
                    "__presence:" + topic,
                    "presence_diff",
                    {"joins": joins, "leaves": leaves},
                    relay=False,
                )
            except Exception:
                log.exception("presence: publishing a diff for %r failed", topic)
                continue
            self._m_frames.inc(topic=self._map_topic(topic))

    def clear(self) -> None:
        self._pending.clear()
