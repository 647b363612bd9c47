"""``FaultyBackend``: record port calls and inject failures, on any backend.

:class:`FaultyBackend` wraps a real backend of any kind: it records every port call (and every
call on subscriptions it returned) and can make chosen operations fail, so failure paths are
tested the same way on every backend without touching backend internals.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import Any

from uwsx.errors import Unavailable
from uwsx.ports.backend import Backend, Capability
from uwsx.testing.proxy import BackendProxy

__all__ = ["Call", "Faults", "FaultyBackend"]


@dataclass(frozen=True)
class Call:
    op: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class Faults:
    """``fail(op)`` makes ``op`` (``"kv.map_put"``, ``"pubsub.publish"``, ``"subscription.add"``
    ...) raise; ``times`` limits how often. ``calls`` records every call in order, ``answers``
    every call the wrapped backend has answered (successfully), in the order of the answers."""

    rules: dict[str, list[Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    answers: list[Call] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)

    gates_after: dict[str, asyncio.Event] = field(default_factory=dict)

    def gate(self, op: str, *, after: bool = False) -> asyncio.Event:
        """Make calls of ``op`` wait until the returned event is set: before reaching the
        backend, or (``after=True``) after the backend answered but before the caller sees
        the result."""
        event = asyncio.Event()
        (self.gates_after if after else self.gates)[op] = event
        return event

    def fail(self, op: str, exc: BaseException | None = None, *, times: int | None = None) -> None:
        self.rules[op] = [exc or Unavailable(f"injected failure of {op}"), times]

    def heal(self, op: str | None = None) -> None:
        if op is None:
            self.rules.clear()
        else:
            self.rules.pop(op, None)

    def check(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.calls.append(Call(op, args, kwargs))
        rule = self.rules.get(op)
        if rule is None:
            return
        exc, times = rule
        if times is not None:
            if times <= 0:
                return
            rule[1] = times - 1
        raise exc

    def called(self, op: str) -> list[Call]:
        return [c for c in self.calls if c.op == op]

    def answered(self, op: str) -> list[Call]:
        """Calls of ``op`` the backend has answered: with an auto-pipelining adapter a call
        may be queued for a while after it was made, so "the server has run it" is this, not
        :meth:`called`. An ``after=True`` gate holds the answer back from the caller only."""
        return [c for c in self.answers if c.op == op]


class _Subscription:
    def __init__(self, inner: Any, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    @property
    def channels(self) -> frozenset[str]:
        channels: frozenset[str] = self._inner.channels
        return channels

    @property
    def healthy(self) -> bool:
        return bool(self._inner.healthy)

    async def add(self, channels: Any) -> None:
        channels = list(channels)
        self._faults.check("subscription.add", (channels,), {})
        await self._inner.add(channels)

    async def remove(self, channels: Any) -> None:
        channels = list(channels)
        self._faults.check("subscription.remove", (channels,), {})
        await self._inner.remove(channels)

    async def close(self) -> None:
        self._faults.check("subscription.close", (), {})
        await self._inner.close()


class _Port:
    def __init__(self, inner: Any, name: str, faults: Faults) -> None:
        self._inner = inner
        self._name = name
        self._faults = faults

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if not callable(value) or not inspect.iscoroutinefunction(value):
            return value
        op = f"{self._name}.{attr}"

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._faults.check(op, args, kwargs)
            gate = self._faults.gates.get(op)
            if gate is not None:
                await gate.wait()
            result = await value(*args, **kwargs)
            self._faults.answers.append(Call(op, args, kwargs))
            gate_after = self._faults.gates_after.get(op)
            if gate_after is not None:
                await gate_after.wait()
            if attr in ("subscribe", "subscribe_expired"):
                return _Subscription(result, self._faults)
            return result

        return call


class FaultyBackend(BackendProxy):
    """A backend proxy recording calls and injecting failures (see the module docstring).

    :param capabilities: replaces the wrapped backend's capabilities when given.
    """

    def __init__(
        self, backend: Backend, *, capabilities: frozenset[Capability] | None = None
    ) -> None:
        self.faults = Faults()
        super().__init__(backend, capabilities=capabilities)

    def wrap_port(self, name: str, port: Any) -> Any:
        return _Port(port, name, self.faults)
