"""``CountingBackend``: a backend proxy that counts port operations (round trips) per name."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import Counter
from typing import Any

from uwsx.ports.backend import Backend
from uwsx.testing.proxy import BackendProxy

__all__ = ["CountingBackend"]


class _Ticks:
    """Counts event-loop ticks in which at least one operation was issued: what an
    auto-pipelining adapter sends as one round trip."""

    def __init__(self) -> None:
        self.count = 0
        self._open = False

    def hit(self) -> None:
        if self._open:
            return
        self._open = True
        self.count += 1
        asyncio.get_running_loop().call_soon(self.close)

    def close(self) -> None:
        self._open = False


async def _reply_leg() -> None:
    """Resume the caller in a later tick, as a network reply would (an in-process backend
    answers synchronously, which would hide sequential round trips)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    loop.call_soon(fut.set_result, None)
    await fut


class _CountingPort:
    def __init__(self, port: Any, name: str, counts: Counter[str], ticks: _Ticks) -> None:
        self._port = port
        self._name = name
        self._counts = counts
        self._ticks = ticks

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._port, attr)
        if attr == "space" and callable(value):

            @functools.wraps(value)
            def space(name: str) -> _CountingPort:
                return _CountingPort(value(name), self._name, self._counts, self._ticks)

            return space
        if inspect.iscoroutinefunction(value):

            @functools.wraps(value)
            async def counted(*args: Any, **kwargs: Any) -> Any:
                self._counts[f"{self._name}.{attr}"] += 1
                self._ticks.hit()
                result = await value(*args, **kwargs)
                await _reply_leg()
                return result

            return counted
        return value


class CountingBackend(BackendProxy):
    """Wraps a backend; ``counts["kv.map_put"]`` is the number of calls of that operation,
    :attr:`total` the number of port operations (each at most one round trip) and
    :attr:`round_trips` the number of event-loop ticks that issued any (what an auto-pipelining
    adapter sends as one round trip each), since :meth:`reset`."""

    def __init__(self, backend: Backend) -> None:
        self.counts: Counter[str] = Counter()
        self._ticks = _Ticks()
        super().__init__(backend)

    def wrap_port(self, name: str, port: Any) -> Any:
        return _CountingPort(port, name, self.counts, self._ticks)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def round_trips(self) -> int:
        return self._ticks.count

    def reset(self) -> None:
        self.counts.clear()
        self._ticks.count = 0
        self._ticks.close()
