"""The six storage ports every feature is written against, and the :class:`Backend` bundle.

Each module's docstring is that port's specification; the contract suite in
:mod:`uwsx.testing.contract` is its executable form.
"""

from __future__ import annotations

from uwsx.ports.backend import PORT_NAMES, Backend, Capability, ServerFunctions
from uwsx.ports.checks import colocate
from uwsx.ports.kv import KV, BoundedPut, BucketResult, MapRemoval
from uwsx.ports.locks import Holder, Lease, Locks, SessionLock
from uwsx.ports.pubsub import (
    ExpiryHandler,
    LossHandler,
    LossWindow,
    MessageHandler,
    PubSub,
    Subscription,
)
from uwsx.ports.queue import Job, Queue, TaskClaim, TaskRecord, TaskStatus
from uwsx.ports.sorted_log import Appended, LogBounds, LogEntry, SortedLog
from uwsx.ports.stream import Stream

__all__ = [
    "KV",
    "PORT_NAMES",
    "Appended",
    "Backend",
    "BoundedPut",
    "BucketResult",
    "Capability",
    "ExpiryHandler",
    "Holder",
    "Job",
    "Lease",
    "Locks",
    "LogBounds",
    "LogEntry",
    "LossHandler",
    "LossWindow",
    "MapRemoval",
    "MessageHandler",
    "PubSub",
    "Queue",
    "ServerFunctions",
    "SessionLock",
    "SortedLog",
    "Stream",
    "Subscription",
    "TaskClaim",
    "TaskRecord",
    "TaskStatus",
    "colocate",
]
