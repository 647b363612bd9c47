"""Backend: the bundle of ports one ``uwsx.connect`` returns, plus declared capabilities.

A port a backend does not offer is ``None``. Capabilities are declared by the adapter from what
the server actually supports (``INFO server``, version checks), never guessed:

=================== ===========================================================================
capability          meaning
=================== ===========================================================================
sharded_pubsub      ``PubSub`` accepts ``sharded=True`` (SPUBLISH/SSUBSCRIBE)
key_expiry_events   ``PubSub.subscribe_expired`` reports KV keys expiring
replica_wait        appends accept ``replicas=(n, timeout)`` (WAIT on the write's connection)
server_functions    ``Backend.functions`` loads and calls server-side function libraries
durable             data survives a restart of the client process (not of a memory backend)
session_locks       ``Locks.try_session_lock`` (connection-scoped locks)
=================== ===========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from uwsx.ports.kv import KV
from uwsx.ports.locks import Locks
from uwsx.ports.pubsub import PubSub
from uwsx.ports.queue import Queue
from uwsx.ports.sorted_log import SortedLog
from uwsx.ports.stream import Stream

__all__ = ["PORT_NAMES", "Backend", "Capability", "ServerFunctions"]

#: Attribute names of the six ports on a :class:`Backend`.
PORT_NAMES: tuple[str, ...] = ("kv", "log", "stream", "pubsub", "locks", "queue")


class Capability(StrEnum):
    SHARDED_PUBSUB = "sharded_pubsub"
    KEY_EXPIRY_EVENTS = "key_expiry_events"
    REPLICA_WAIT = "replica_wait"
    SERVER_FUNCTIONS = "server_functions"
    DURABLE = "durable"
    SESSION_LOCKS = "session_locks"


@runtime_checkable
class ServerFunctions(Protocol):
    """Server-side function libraries (Redis 7 FUNCTION LOAD / FCALL), capability
    ``server_functions``. On a cluster, ``load`` and ``delete`` act on every primary."""

    async def load(self, code: str, *, replace: bool = False) -> str:
        """Load a library; returns its name."""
        ...

    async def call(
        self, function: str, *, keys: Sequence[str] = (), args: Sequence[str | int | float] = ()
    ) -> object: ...

    async def delete(self, library: str) -> bool: ...

    async def list(self) -> list[str]:
        """Names of loaded libraries."""
        ...


@runtime_checkable
class Backend(Protocol):
    """What :func:`uwsx.connect` returns."""

    @property
    def name(self) -> str:
        """The registered backend name (``memory``, ``redis``, ...)."""
        ...

    @property
    def url(self) -> str:
        """The connection URL with credentials redacted."""
        ...

    @property
    def key_prefix(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    @property
    def info(self) -> Mapping[str, str]:
        """Server facts (``server``, ``version``, ``mode``...) for diagnostics."""
        ...

    @property
    def kv(self) -> KV | None: ...

    @property
    def log(self) -> SortedLog | None: ...

    @property
    def stream(self) -> Stream | None: ...

    @property
    def pubsub(self) -> PubSub | None: ...

    @property
    def locks(self) -> Locks | None: ...

    @property
    def queue(self) -> Queue | None: ...

    @property
    def functions(self) -> ServerFunctions | None: ...

    async def close(self) -> None:
        """Release every connection. Idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
