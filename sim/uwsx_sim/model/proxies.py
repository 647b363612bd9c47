"""The port proxies a :class:`~uwsx_sim.model.client.SimConnection` hands to feature code.

Each port attribute of a connection is a proxy with the port's exact methods; a call becomes an
RPC whose apply step runs the real memory-backend operation on the backend model. An append
that asks for ``replicas=(n, timeout)`` on a backend with replicas is the write plus Redis
``WAIT n timeout`` on the same connection (https://redis.io/docs/latest/commands/wait/): the
proxy takes the wait off the call (the memory backend has no replicas to wait for) and the
connection answers it from the replication model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

from uwsx.ports import Capability
from uwsx.ports.checks import check_space_name
from uwsx.ports.sorted_log import Appended

if TYPE_CHECKING:
    from uwsx_sim.model.client import SimConnection
    from uwsx_sim.model.replication import BackendModel

__all__ = ["PORT_METHODS", "PROXIES", "WAITING_METHODS", "WaitReply", "check_wait"]

PORT_METHODS: dict[str, tuple[str, ...]] = {
    "kv": (
        "get",
        "get_many",
        "set",
        "set_if_absent",
        "compare_and_set",
        "compare_and_delete",
        "compare_and_expire",
        "expire",
        "ttl",
        "delete",
        "incr",
        "delete_prefix",
        "map_put",
        "map_put_many",
        "map_get",
        "map_items",
        "map_count",
        "map_remove",
        "map_sweep",
        "map_put_bounded",
        "bucket_take",
        "bucket_ban",
    ),
    "log": ("append", "read_after", "bounds", "delete", "delete_prefix"),
    "stream": ("append", "read_after", "bounds", "delete", "delete_prefix", "append_idempotent"),
    "locks": (
        "acquire",
        "renew",
        "release",
        "holder",
        "seize",
        "try_session_lock",
        "release_session_lock",
        "session_lock_held",
    ),
    "queue": (
        "enqueue",
        "claim",
        "complete",
        "fail",
        "extend",
        "pending",
        "clear",
        "task_insert",
        "task_rearm",
        "task_heartbeat",
        "task_commit",
        "task_fail",
        "task_read",
        "task_list",
        "task_counts",
        "task_expire_fence",
        "task_claim_pending",
        "task_reclaim_expired",
        "task_cleanup",
    ),
}


class _PortProxy:
    """Base of the generated per-port proxies."""

    _port = ""

    def __init__(self, conn: SimConnection, space: str | None = None) -> None:
        self._conn = conn
        self._space = space

    def space(self, name: str) -> Self:
        return type(self)(self._conn, check_space_name(name))

    async def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        conn, port, space = self._conn, self._port, self._space
        wait: tuple[int, float] | None = None
        if (
            (port, method) in WAITING_METHODS
            and kwargs.get("replicas") is not None
            and Capability.REPLICA_WAIT in conn.capabilities
        ):
            wait = check_wait(kwargs["replicas"])
            kwargs = {k: v for k, v in kwargs.items() if k != "replicas"}

        def resolve() -> Any:
            target: Any = getattr(conn.inner, port)
            if space is not None:
                target = target.space(space)
            return getattr(target, method)(*args, **kwargs)

        record = (port, space, method, args, kwargs)
        return await conn.call(f"{port}.{method}", resolve, record, wait=wait)


def _make_method(name: str) -> Callable[..., Any]:
    async def method(self: _PortProxy, *args: Any, **kwargs: Any) -> Any:
        return await self._call(name, args, kwargs)

    method.__name__ = name
    return method


def _make_proxy(port: str) -> type[_PortProxy]:
    namespace: dict[str, Any] = {"_port": port, "__slots__": ()}
    for name in PORT_METHODS[port]:
        namespace[name] = _make_method(name)
    return type(f"Sim{port.capitalize()}Proxy", (_PortProxy,), namespace)


PROXIES = {port: _make_proxy(port) for port in PORT_METHODS}


#: the appends that accept ``replicas=(n, timeout)``
WAITING_METHODS = frozenset(
    {("log", "append"), ("stream", "append"), ("stream", "append_idempotent")}
)


def check_wait(replicas: object) -> tuple[int, float]:
    """``replicas=(n, timeout)`` checked as the adapters check it (before anything is sent).

    :raises TypeError: not a ``(count, seconds)`` tuple.
    :raises ValueError: a negative count or a negative or non-finite timeout.
    """
    if not isinstance(replicas, tuple) or len(replicas) != 2:
        raise TypeError("replicas must be a (count, timeout seconds) tuple")
    count, timeout = replicas
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"replica count must be an int, got {type(count).__name__}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"replica timeout must be seconds, got {type(timeout).__name__}")
    if count < 0 or timeout < 0 or not math.isfinite(timeout):
        raise ValueError(f"replicas must be (count >= 0, finite timeout >= 0), got {replicas!r}")
    return count, float(timeout)


class WaitReply:
    """The reply of an append followed by ``WAIT n timeout``: the count is read when the
    reply leaves, from the replicas' acknowledgement times up to ``ready`` (when WAIT
    returned); acknowledgements after a failover or restart ended the generation never count.
    """

    __slots__ = ("generation", "model", "ready", "times", "value", "wanted")

    def __init__(
        self,
        value: Appended,
        model: BackendModel,
        generation: int,
        times: list[float],
        ready: float,
        wanted: int,
    ) -> None:
        self.value = value
        self.model = model
        self.generation = generation
        self.times = times
        self.ready = ready
        self.wanted = wanted

    def resolve(self) -> Appended:
        acked = self.model.acked_by(self.generation, self.times, self.ready)
        return Appended(self.value.seq, self.value.duplicate, acked)
