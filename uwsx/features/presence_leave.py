"""The storage half of :meth:`~uwsx.features.presence.Presence.leave`, batched.

One leave call (one topic, every topic of a leave-all, or each of many concurrent calls in a
mass disconnect) issues all its storage work in one event-loop tick: the removal of every field
whose user has no local tab left, the re-put of a remaining tab's data where the leaving tab's
was shown, and the unsubscribe of every channel left without a local audience. Once the replies
are in, it emits the local diffs and announces everything in one ``publish_many``. A removal
that reports "last holder gone" is announced exactly once (by the caller that saw it), unless a
local join of the same user issued its own write after the removal: that join's write and
event supersede the leave.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from uwsx.errors import CircuitBrokenError
from uwsx.features.presence_events import Outbound
from uwsx.platform import Platform
from uwsx.ports.kv import MapRemoval

if TYPE_CHECKING:
    from uwsx.features.presence_core import PresenceCore

__all__ = ["Removal", "Restore", "finish_leave"]

log = logging.getLogger("uwsx.presence")

#: ``(topic, user key, data shown)`` of a user whose last local tab left.
Removal = tuple[str, str, Any]
#: ``(topic, user key, remaining tab's data, previously held entry)``.
Restore = tuple[str, str, Any, tuple[Any, float]]


async def finish_leave(
    p: PresenceCore,
    platform: Platform,
    topics: list[str],
    removes: list[Removal],
    restores: list[Restore],
) -> None:
    """Issue the storage work of one leave in one tick, then announce the outcome with one
    publish. While the breaker is open no storage call is made and nothing is announced
    (entries expire within ``ttl``; restores keep their previous data)."""
    emptied = [t for t in topics if p._drop_idle(t)]
    storage = bool(removes or restores)
    if storage:
        try:
            p._store.guard()
        except CircuitBrokenError:
            storage = False
    at = p._issue()
    calls: list[Any] = []
    if storage:
        calls += [_remove(p, t, k) for t, k, _ in removes]
        calls += [_restore(p, t, k) for t, k, _, _ in restores]
    if emptied:
        calls.append(p._channels.release_many(emptied))
    results = await asyncio.gather(*calls, return_exceptions=True)
    removed = results[: len(removes)] if storage else [None] * len(removes)
    skipped: list[BaseException | None] = [CircuitBrokenError("breaker open")] * len(restores)
    restored = results[len(removes) : len(removes) + len(restores)] if storage else skipped
    if storage:
        failures = [r for r in (*removed, *restored) if isinstance(r, BaseException)]
        p._store.settle(failures[0] if failures else None)
    events: list[Outbound] = []
    for (name, key, data), result in zip(removes, removed, strict=True):
        state = p._topics.get(name)
        if state is not None and state.put_at.get(key, 0) > at:
            continue  # re-joined here meanwhile: that join's write and event supersede
        if state is not None:
            state.put_at.pop(key, None)
        if isinstance(result, MapRemoval) and result.gone:
            p._m_leaves.inc(topic=p._map_topic(name))
            p._emit(platform, name, key, "leave", data)
            events.append((name, "leave", key, data))
    for (name, key, data, prev), result in zip(restores, restored, strict=True):
        state = p._topics.get(name)
        if state is None:
            continue
        if result is None:
            p._emit(platform, name, key, "join", data)
            events.append((name, "updated", key, data))
        elif state.held.get(key) is not None:
            log.debug("presence: restoring %r failed: %s", key, result)
            state.held[key] = prev
    await p._channels.publish_many(events)


async def _remove(p: PresenceCore, topic: str, key: str) -> MapRemoval:
    async with p._store.ordered(topic, key):
        return await p._store.remove(topic, key)


async def _restore(p: PresenceCore, topic: str, key: str) -> None:
    """Store the data of the user's remaining local tab (already in ``held``)."""
    async with p._store.ordered(topic, key):
        state = p._topics.get(topic)
        held = state.held.get(key) if state is not None else None
        if held is not None:
            await p._store.put(topic, key, *held, guard=False)
