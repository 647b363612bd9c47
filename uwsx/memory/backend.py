"""``MemoryBackend``: all six ports over a named in-process store (``memory://name``)."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from uwsx.memory.kv import MemoryKV
from uwsx.memory.locks import MemoryLocks
from uwsx.memory.logs import MemorySortedLog, MemoryStream
from uwsx.memory.pubsub import MemoryPubSub
from uwsx.memory.queue import MemoryQueue
from uwsx.memory.store import MemoryStore, open_store
from uwsx.ports.backend import Capability

__all__ = ["CAPABILITIES", "MemoryBackend", "open_backend"]

#: Everything the memory backend can honestly emulate. No replicas (``replica_wait``), no
#: server functions, and nothing survives the process (no ``durable``).
CAPABILITIES = frozenset(
    {Capability.SHARDED_PUBSUB, Capability.KEY_EXPIRY_EVENTS, Capability.SESSION_LOCKS}
)


class MemoryBackend:
    """One client of a :class:`MemoryStore`. Every open of the same name shares the store."""

    def __init__(self, store: MemoryStore, *, key_prefix: str = "") -> None:
        self.store = store
        self._prefix = key_prefix
        self._kv = MemoryKV(store, key_prefix)
        self._log = MemorySortedLog(store, key_prefix)
        self._stream = MemoryStream(store, key_prefix)
        self._pubsub = MemoryPubSub(store, key_prefix)
        self._locks = MemoryLocks(store, key_prefix, session=store.ids.hex(8))
        self._queue = MemoryQueue(store, key_prefix)
        self._closed = False

    @property
    def name(self) -> str:
        return "memory"

    @property
    def url(self) -> str:
        return f"memory://{self.store.name}"

    @property
    def key_prefix(self) -> str:
        return self._prefix

    @property
    def capabilities(self) -> frozenset[Capability]:
        return CAPABILITIES

    @property
    def info(self) -> Mapping[str, str]:
        return {
            "server": "memory",
            "store": self.store.name or "(private)",
            "epoch": self.store.epoch,
        }

    @property
    def kv(self) -> MemoryKV:
        return self._kv

    @property
    def log(self) -> MemorySortedLog:
        return self._log

    @property
    def stream(self) -> MemoryStream:
        return self._stream

    @property
    def pubsub(self) -> MemoryPubSub:
        return self._pubsub

    @property
    def locks(self) -> MemoryLocks:
        return self._locks

    @property
    def queue(self) -> MemoryQueue:
        return self._queue

    @property
    def functions(self) -> None:
        return None

    def reset_session(self) -> None:
        """Model a dropped connection: session locks are released and a new session starts.
        (Subscriptions are the simulator's to drop; it owns the network.)"""
        self._locks.end_session(self.store.ids.hex(8))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._locks.end_session(None)
        await self._pubsub.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def open_backend(target: object, *, key_prefix: str = "", **options: Any) -> MemoryBackend:
    """Factory registered for ``memory://``. ``memory://name`` shares the store named ``name``
    with every other opener in this interpreter; ``memory://`` opens a private store.
    ``store=`` passes a :class:`MemoryStore` directly (the simulator does)."""
    store = options.pop("store", None)
    if options:
        raise TypeError(f"unexpected options for the memory backend: {sorted(options)}")
    if store is None:
        if not isinstance(target, str):
            raise TypeError("the memory backend opens memory:// URLs")
        parts = urlsplit(target)
        if parts.scheme != "memory":
            raise ValueError(f"not a memory URL: {target!r}")
        if parts.path not in ("", "/") or parse_qs(parts.query):
            raise ValueError(f"memory URLs look like memory://name, got {target!r}")
        store = open_store(parts.netloc)
    if not isinstance(store, MemoryStore):
        raise TypeError("store must be a uwsx.memory.MemoryStore")
    return MemoryBackend(store, key_prefix=key_prefix)
