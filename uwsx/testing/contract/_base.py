"""What every contract class shares: port access, unique names, bounded waiting, input checks.

The suites run unchanged on an in-process store and on real servers over a network, so nothing
here depends on a backend's internals: a test observes a backend only through its ports, waits
for TTLs by polling with a bounded deadline, and keeps to its own namespace (the per-test
``key_prefix`` the plugin gives it, plus unique log and queue names).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar, Protocol, TypeVar

import pytest

from uwsx import _runtime
from uwsx._runtime.clock import wait_event
from uwsx.ports.backend import Backend
from uwsx.ports.kv import KV
from uwsx.ports.locks import Locks
from uwsx.ports.pubsub import PubSub
from uwsx.ports.queue import Queue
from uwsx.ports.sorted_log import SortedLog
from uwsx.ports.stream import Stream

__all__ = [
    "INVALID_SPACE_NAMES",
    "TTL_SLACK",
    "BackendOpener",
    "ContractBase",
    "Inbox",
    "bad_input",
    "gather",
    "kv_of",
    "locks_of",
    "log_of",
    "pubsub_of",
    "queue_of",
    "stream_of",
]

T = TypeVar("T")

#: Backends report TTLs with millisecond resolution; a reading may round up by this much.
TTL_SLACK = 0.002

#: Space names that ``space()`` must refuse (not SQL identifiers, or reserved by Postgres).
INVALID_SPACE_NAMES: tuple[str, ...] = (
    "",
    "1abc",
    "a-b",
    "a b",
    "pg_x",
    "information_schema",
    "x" * 64,
)


class BackendOpener(Protocol):
    """The ``open_backend`` fixture: another client on the same storage, closed after the test.

    :param key_prefix: a different namespace (default: the test's own prefix).
    """

    async def __call__(self, *, key_prefix: str | None = None) -> Backend: ...


def _port(backend: Backend, name: str) -> Any:
    port = getattr(backend, name)
    assert port is not None, f"backend {backend.name!r} offers no {name} port"
    return port


def kv_of(backend: Backend) -> KV:
    port: KV = _port(backend, "kv")
    return port


def log_of(backend: Backend) -> SortedLog:
    port: SortedLog = _port(backend, "log")
    return port


def stream_of(backend: Backend) -> Stream:
    port: Stream = _port(backend, "stream")
    return port


def pubsub_of(backend: Backend) -> PubSub:
    port: PubSub = _port(backend, "pubsub")
    return port


def locks_of(backend: Backend) -> Locks:
    port: Locks = _port(backend, "locks")
    return port


def queue_of(backend: Backend) -> Queue:
    port: Queue = _port(backend, "queue")
    return port


def bad_input(
    name: str, kind: type[Exception] | tuple[type[Exception], ...] = (TypeError, ValueError)
) -> pytest.RaisesExc[Exception]:
    """Expect ``kind`` with a message naming the argument ``name``."""
    return pytest.raises(kind, match=re.escape(name))


class ContractBase:
    """Base of every contract class: the asyncio mark and the helpers tests share."""

    # Explicit, so the suites also run in pytest-asyncio's strict mode.
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    #: Bound on every wait for a TTL, a message or an event, in seconds. Generous so that a
    #: loaded CI machine talking to a real server does not fail spuriously.
    uwsx_wait_timeout: ClassVar[float] = 10.0
    #: Pause between two polls of a condition that cannot be awaited (TTL expiry).
    uwsx_poll_interval: ClassVar[float] = 0.02
    #: Number of clients the concurrency tests open.
    uwsx_clients: ClassVar[int] = 5

    def uwsx_space(self, port: str) -> str:
        """The ``space()`` name this class uses for ``port`` (``"log"``, ``"stream"``,
        ``"queue"``): derived from the class, so a table-per-space backend creates one table per
        contract class and port, reused across runs. Override to choose another."""
        owner = f"{type(self).__module__}.{type(self).__qualname__}"
        digest = hashlib.blake2b(owner.encode(), digest_size=5).hexdigest()
        return f"uwsx_ct_{port}_{digest}"

    def unique(self, stem: str) -> str:
        """A name no other test (or earlier run against the same server) uses."""
        return f"{stem}-{_runtime.current().ids.hex(4)}"

    async def clients(self, open_backend: BackendOpener, count: int | None = None) -> list[Backend]:
        """``count`` (default :attr:`uwsx_clients`) more clients on the test's storage."""
        return [await open_backend() for _ in range(count or self.uwsx_clients)]

    async def eventually(
        self, probe: Callable[[], Awaitable[T]], until: Callable[[T], bool], what: str
    ) -> T:
        """Poll ``probe`` until ``until(value)`` holds and return that value; fail after
        :attr:`uwsx_wait_timeout` seconds, showing the last value."""
        clock = _runtime.current().clock
        deadline = clock.monotonic() + self.uwsx_wait_timeout
        while True:
            value = await probe()
            if until(value):
                return value
            if clock.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {self.uwsx_wait_timeout:g} s waiting for {what}; "
                    f"last value: {value!r}"
                )
            await clock.sleep(self.uwsx_poll_interval)

    def inbox(self) -> Inbox:
        return Inbox(self.uwsx_wait_timeout)


async def gather(coros: Iterable[Awaitable[T]]) -> list[T]:
    """Run ``coros`` concurrently (the concurrency tests' way to interleave clients)."""
    return list(await asyncio.gather(*coros))


class Inbox:
    """A pub/sub (or expiry) handler that records what it is called with and lets a test await
    a condition on the record, bounded by a timeout."""

    def __init__(self, timeout: float) -> None:
        self.items: list[tuple[str, str]] = []
        self.keys: list[str] = []
        self._timeout = timeout
        self._changed = asyncio.Event()
        #: Messages the handler raises on (after recording them), for resilience tests.
        self.fail_on: set[str] = set()

    def __call__(self, channel: str, message: str) -> None:
        self.items.append((channel, message))
        self._changed.set()
        if message in self.fail_on:
            raise RuntimeError(f"handler failing on purpose for {message!r}")

    def expired(self, key: str) -> None:
        """Use as an :data:`~uwsx.ports.pubsub.ExpiryHandler`."""
        self.keys.append(key)
        self._changed.set()

    @property
    def messages(self) -> list[str]:
        return [m for _, m in self.items]

    async def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        clock = _runtime.current().clock
        deadline = clock.monotonic() + self._timeout
        while not condition():
            left = deadline - clock.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out after {self._timeout:g} s waiting for {what}; received "
                    f"{self.items!r} / expired keys {self.keys!r}"
                )
            self._changed.clear()
            await wait_event(self._changed, left, clock)

    async def wait_for(self, message: str) -> None:
        """Wait until ``message`` arrived (on any channel)."""
        await self.wait_until(lambda: message in self.messages, f"message {message!r}")
