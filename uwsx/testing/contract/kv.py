"""The KV port contract: strings, counters, deadline maps and token buckets.

An adapter's tests subclass :class:`KVContract` and point ``uwsx_backend_target`` at their
server; every test runs in its own ``key_prefix``.
"""

from __future__ import annotations

from uwsx.testing.contract._kv_buckets import KVBucketsContract
from uwsx.testing.contract._kv_maps import KVMapsContract
from uwsx.testing.contract._kv_strings import KVStringsContract

__all__ = ["KVBucketsContract", "KVContract", "KVMapsContract", "KVStringsContract"]


class KVContract(KVStringsContract, KVMapsContract, KVBucketsContract):
    """Every operation of :class:`uwsx.ports.KV`, including atomicity across clients."""
