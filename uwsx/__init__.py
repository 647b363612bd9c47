"""uwsx: cluster-wide realtime primitives for Python WebSocket servers.

Features are written once against six storage ports (``uwsx.ports``); ``uwsx.connect`` opens a
backend (memory, Redis, Valkey, Postgres, or any plugin) chosen by URL scheme.
"""

from __future__ import annotations

from uwsx.connect import CompositeBackend, connect, installed_backends, require
from uwsx.errors import (
    BackendError,
    CircuitBrokenError,
    IdempotencyResultTooLargeError,
    Indeterminate,
    InvalidNameError,
    LockAcquireTimeoutError,
    LockLostError,
    ReplaySerializationError,
    ReplayStorageError,
    ReplicationTimeoutError,
    TaskInFlightError,
    Unavailable,
    UnknownTaskError,
    UnsupportedBackendError,
    UwsxError,
)
from uwsx.features.bus import PubSubBus
from uwsx.features.cursor import Cursor
from uwsx.features.groups import Group
from uwsx.features.groups_members import GroupMember
from uwsx.features.presence import Presence, PresenceStats
from uwsx.features.replay import Gap, IdempotentPublish, ReplayBuffer
from uwsx.features.sharded_bus import LocalSubject, ShardedBus
from uwsx.metrics import Metrics
from uwsx.platform import (
    Connection,
    ConnectionClosedError,
    LocalConnection,
    LocalPlatform,
    Message,
    Platform,
    PressureSnapshot,
)
from uwsx.plugins import register_plugin
from uwsx.ports import Backend, Capability
from uwsx.registry import BackendRegistry, BackendSpec
from uwsx.reliability.breaker import CircuitBreaker

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "BackendRegistry",
    "BackendSpec",
    "Capability",
    "CircuitBreaker",
    "CircuitBrokenError",
    "CompositeBackend",
    "Connection",
    "ConnectionClosedError",
    "Cursor",
    "Gap",
    "Group",
    "GroupMember",
    "IdempotencyResultTooLargeError",
    "IdempotentPublish",
    "Indeterminate",
    "InvalidNameError",
    "LocalConnection",
    "LocalPlatform",
    "LocalSubject",
    "LockAcquireTimeoutError",
    "LockLostError",
    "Message",
    "Metrics",
    "Platform",
    "Presence",
    "PresenceStats",
    "PressureSnapshot",
    "PubSubBus",
    "ReplayBuffer",
    "ReplaySerializationError",
    "ReplayStorageError",
    "ReplicationTimeoutError",
    "ShardedBus",
    "TaskInFlightError",
    "Unavailable",
    "UnknownTaskError",
    "UnsupportedBackendError",
    "UwsxError",
    "__version__",
    "connect",
    "installed_backends",
    "register_plugin",
    "require",
]
