"""Every public uwsx exception.

Port errors keep two outcomes apart, because callers must react differently:

* :class:`Unavailable` -- the operation was **not** applied (the request never left, the
  connection was refused, the circuit breaker is open). Retrying is safe.
* :class:`Indeterminate` -- the request may have been applied (the connection dropped after
  sending, a reply timed out). Retrying can apply it twice; idempotent operations only.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CircuitBrokenError",
    "IdempotencyResultTooLargeError",
    "Indeterminate",
    "InvalidNameError",
    "LockAcquireTimeoutError",
    "LockLostError",
    "ReplaySerializationError",
    "ReplayStorageError",
    "ReplicationTimeoutError",
    "TaskInFlightError",
    "Unavailable",
    "UnknownTaskError",
    "UnsupportedBackendError",
    "UwsxError",
]


class UwsxError(Exception):
    """Base class of every error raised by uwsx."""


class BackendError(UwsxError):
    """The backend refused the operation (wrong type stored under a key, value too large,
    a malformed stored value...). Nothing was applied."""


class Unavailable(BackendError):
    """The backend could not be reached; the operation was definitely not applied."""


class Indeterminate(BackendError):
    """The connection was lost after the request was sent: it may or may not have applied."""


class UnsupportedBackendError(UwsxError):
    """A URL scheme nobody registered, or a backend that lacks a port or capability a feature
    needs. The message names what is missing and which package provides it."""


class CircuitBrokenError(Unavailable):
    """The circuit breaker is open: the call was refused without touching the backend."""

    def __init__(self, message: str = "circuit breaker is open - backend unavailable") -> None:
        super().__init__(message)


class InvalidNameError(UwsxError, ValueError):
    """A table, metric, task or channel name that does not match the allowed pattern."""


class ReplayStorageError(UwsxError):
    """The replay buffer could not store or read a message. ``op`` names the operation and
    ``__cause__`` (also ``cause``) holds the original error."""

    def __init__(self, op: str, cause: BaseException) -> None:
        super().__init__(f"replay storage failed during {op}: {cause}")
        self.op = op
        self.cause = cause
        self.__cause__ = cause


class ReplaySerializationError(UwsxError):
    """A replay payload could not be serialised to JSON; nothing was stored."""

    def __init__(self, op: str, cause: BaseException) -> None:
        super().__init__(f"replay payload could not be serialized during {op}: {cause}")
        self.op = op
        self.cause = cause
        self.__cause__ = cause


class ReplicationTimeoutError(UwsxError):
    """Fewer replicas than ``min_replicas`` acknowledged a write within ``timeout`` seconds.
    The write itself is stored on the primary."""

    def __init__(self, ack: int, min_replicas: int, timeout: float) -> None:
        super().__init__(
            f"replication timed out: {ack}/{min_replicas} replicas acked within {timeout:g} s"
        )
        self.ack = ack
        self.min_replicas = min_replicas
        self.timeout = timeout


class LockAcquireTimeoutError(UwsxError):
    """A lock was not acquired within ``max_wait`` seconds."""

    def __init__(self, key: str, waited: float) -> None:
        super().__init__(f"could not acquire lock {key!r} within {waited:g} s")
        self.key = key
        self.waited = waited


class LockLostError(UwsxError):
    """The lease behind a held lock expired or was taken over."""

    def __init__(self, key: str) -> None:
        super().__init__(f"lock {key!r} was lost")
        self.key = key


class TaskInFlightError(UwsxError):
    """Another caller is running the task for this idempotency key."""

    def __init__(self, idempotency_key: str) -> None:
        super().__init__(f"task in flight for idempotency key {idempotency_key!r}")
        self.idempotency_key = idempotency_key


class UnknownTaskError(UwsxError):
    """``run`` was called for a task name with no local handler."""

    def __init__(self, task_name: str) -> None:
        super().__init__(f"no handler registered for task {task_name!r}")
        self.task_name = task_name


class IdempotencyResultTooLargeError(UwsxError):
    """A result passed to ``commit`` is larger than ``max_result_bytes``."""

    def __init__(self, size: int, max_size: int) -> None:
        super().__init__(f"idempotency result is {size} bytes, limit is {max_size}")
        self.size = size
        self.max_size = max_size
