"""The port contract suite: abstract test classes every backend adapter's tests subclass.

Each class holds the executable form of one port's specification (the port module's
docstring). An adapter's test module subclasses it and says where its server is::

    from uwsx.testing.contract import KVContract

    class TestRedisKV(KVContract):
        @pytest.fixture
        def uwsx_backend_target(self, redis_url: str) -> str:
            return redis_url

The fixtures come from the ``uwsx`` pytest plugin (:mod:`uwsx.testing.pytest_plugin`, loaded
automatically once uwsx is installed): ``backend`` is a client with a per-test ``key_prefix``,
``open_backend`` opens more clients on the same storage for concurrency tests, and
``--uwsx-backend URL`` points every contract class that does not override the target at one
server. A backend lacking an optional capability passes when it refuses it with
:class:`uwsx.errors.UnsupportedBackendError`.
"""

from __future__ import annotations

from uwsx.testing.contract._base import BackendOpener, ContractBase, Inbox
from uwsx.testing.contract.backend import BackendContract
from uwsx.testing.contract.kv import (
    KVBucketsContract,
    KVContract,
    KVMapsContract,
    KVStringsContract,
)
from uwsx.testing.contract.locks import LocksContract
from uwsx.testing.contract.pubsub import PubSubContract
from uwsx.testing.contract.queue import QueueContract, QueueJobsContract, QueueTasksContract
from uwsx.testing.contract.sorted_log import SortedLogContract
from uwsx.testing.contract.stream import StreamContract

__all__ = [
    "AllPortsContract",
    "BackendContract",
    "BackendOpener",
    "ContractBase",
    "Inbox",
    "KVBucketsContract",
    "KVContract",
    "KVMapsContract",
    "KVStringsContract",
    "LocksContract",
    "PubSubContract",
    "QueueContract",
    "QueueJobsContract",
    "QueueTasksContract",
    "SortedLogContract",
    "StreamContract",
]


class AllPortsContract(
    BackendContract,
    KVContract,
    SortedLogContract,
    StreamContract,
    PubSubContract,
    LocksContract,
    QueueContract,
):
    """The whole suite, for a backend that offers every port."""
