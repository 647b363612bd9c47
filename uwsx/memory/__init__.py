"""The embedded memory backend: every port, atomic on the event loop, deterministic."""

from __future__ import annotations

from uwsx.memory.backend import MemoryBackend, open_backend
from uwsx.memory.kv import MemoryKV
from uwsx.memory.locks import MemoryLocks
from uwsx.memory.logs import MemorySortedLog, MemoryStream
from uwsx.memory.pubsub import MemoryPubSub
from uwsx.memory.queue import MemoryQueue
from uwsx.memory.store import MemoryStore, drop_store, get_store, install_store, open_store

__all__ = [
    "MemoryBackend",
    "MemoryKV",
    "MemoryLocks",
    "MemoryPubSub",
    "MemoryQueue",
    "MemorySortedLog",
    "MemoryStore",
    "MemoryStream",
    "drop_store",
    "get_store",
    "install_store",
    "open_backend",
    "open_store",
]
