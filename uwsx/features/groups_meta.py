"""Group metadata (:class:`~uwsx.features.groups.Group`): one KV map of text values.

The initial ``meta=`` is merged in once, in the background as soon as an event loop runs (the
original wrote it fire-and-forget at construction). If that write fails, the next
:meth:`GroupMeta.get` retries it first, unless :meth:`GroupMeta.set` stored newer data in the
meantime (a late retry must not overwrite it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from uwsx._runtime import TaskGroup
from uwsx.features.groups_members import encode_meta
from uwsx.ports.kv import KV
from uwsx.reliability.breaker import CircuitBreaker, with_breaker

__all__ = ["GroupMeta"]

log = logging.getLogger("uwsx.groups")


class GroupMeta:
    """Reads and merges the metadata map ``key``."""

    def __init__(
        self,
        kv: KV,
        key: str,
        initial: Mapping[str, Any] | None,
        *,
        breaker: CircuitBreaker | None,
        tasks: TaskGroup,
    ) -> None:
        self._kv = kv
        self._key = key
        self._breaker = breaker
        self._tasks = tasks
        self._initial = encode_meta(initial) if initial else None
        self._write: asyncio.Task[None] | None = None
        self._failed = False

    def start(self) -> None:
        """Write the initial metadata in the background (idempotent; needs a running loop)."""
        if self._initial is not None and self._write is None:
            self._write = self._tasks.spawn(self._write_initial(), name="uwsx-group-meta")

    async def written(self) -> None:
        """Wait for the initial write (a failure is logged and retried by :meth:`get`)."""
        self.start()
        if self._write is not None:
            await asyncio.shield(self._write)

    async def _write_initial(self) -> None:
        initial = self._initial
        if initial is None:
            return
        try:
            await self._kv.map_put_many(self._key, initial)
        except Exception as exc:
            log.warning("group meta %r: initial write failed: %s", self._key, exc)
            self._failed = True
            return
        if self._initial is initial:
            self._initial = None

    async def get(self) -> dict[str, str]:
        """The metadata (values as text), after the initial write or its retry."""
        if self._write is not None:
            await asyncio.shield(self._write)
        initial = self._initial
        if initial is not None and (self._failed or self._write is None):
            await with_breaker(self._breaker, lambda: self._kv.map_put_many(self._key, initial))
            self._failed = False
            self._initial = None
        return await with_breaker(self._breaker, lambda: self._kv.map_items(self._key))

    async def set(self, meta: Mapping[str, Any]) -> None:
        """Merge ``meta`` (an empty mapping deletes the whole map)."""
        if not isinstance(meta, Mapping):
            raise TypeError("meta must be a mapping")
        encoded = encode_meta(meta)
        if encoded:
            await with_breaker(self._breaker, lambda: self._kv.map_put_many(self._key, encoded))
        else:
            await with_breaker(self._breaker, lambda: self._kv.delete(self._key))
        self._failed = False
        self._initial = None
