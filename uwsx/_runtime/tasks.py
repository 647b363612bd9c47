"""Background tasks owned by one feature object, cancelled together on close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")
log = logging.getLogger("uwsx")


class TaskGroup:
    """Spawns tasks, keeps strong references, logs failures and cancels all on :meth:`aclose`.

    Unlike :class:`asyncio.TaskGroup` a failing child does not cancel its siblings: background
    loops (heartbeats, sweeps) must survive each other's errors.
    """

    __slots__ = ("_closed", "_tasks", "owner")

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: dict[asyncio.Task[Any], None] = {}
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, _T], *, name: str | None = None) -> asyncio.Task[_T]:
        """Run ``coro`` in the background; a closed group refuses new work."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.owner}: task group is closed")
        task = asyncio.get_running_loop().create_task(coro, name=name or self.owner)
        self._tasks[task] = None
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s: background task %s failed", self.owner, task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        """Cancel every task and wait for them to finish. Idempotent."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
