"""Testing kit: a recording platform, mock connections, a memory backend, and the port
contract suite (:mod:`uwsx.testing.contract`, also a pytest plugin with ``--uwsx-backend``)."""

from __future__ import annotations

from uwsx._runtime.manual import ManualClock, manual_runtime
from uwsx.memory.backend import MemoryBackend
from uwsx.memory.store import MemoryStore
from uwsx.testing.counting import CountingBackend
from uwsx.testing.faulty import Call, Faults, FaultyBackend
from uwsx.testing.mock_platform import (
    MockConnection,
    MockPlatform,
    Published,
    Requested,
    Sent,
    SentCoalesced,
    Subscribed,
)
from uwsx.testing.proxy import BackendProxy

__all__ = [
    "BackendProxy",
    "Call",
    "CountingBackend",
    "Faults",
    "FaultyBackend",
    "ManualClock",
    "MockConnection",
    "MockPlatform",
    "Published",
    "Requested",
    "Sent",
    "SentCoalesced",
    "Subscribed",
    "manual_runtime",
    "memory_backend",
]


def memory_backend(name: str = "", *, key_prefix: str = "") -> MemoryBackend:
    """A memory backend (private store unless ``name`` is given), ready to use without awaiting
    ``uwsx.connect``."""
    from uwsx.memory.store import open_store

    store: MemoryStore = open_store(name)
    return MemoryBackend(store, key_prefix=key_prefix)
