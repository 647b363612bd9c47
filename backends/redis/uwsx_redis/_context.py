"""What every port adapter shares: the executor, the key layout and value conversions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from uwsx.errors import BackendError
from uwsx_redis._driver import Topology
from uwsx_redis._driver_exec import Executor, Op, script_op
from uwsx_redis._keys import Keyspace
from uwsx_redis._scripts import script

__all__ = ["Context", "ms", "number", "text"]

#: Redis refuses bulk strings above 512 MiB (proto-max-bulk-len) and drops the connection.
DEFAULT_MAX_VALUE_BYTES = 512 * 1024 * 1024 - 1024
#: Pub/sub messages are held in every subscriber's output buffer (Redis disconnects a
#: subscriber whose buffer passes 8 MiB for a minute), so the default is far smaller.
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds, at least 1 (a positive TTL never rounds to none)."""
    return max(1, round(seconds * 1000))


def text(value: Any) -> str:
    """A reply as ``str`` (replies are read undecoded)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise BackendError("Redis holds a value that is not UTF-8 text") from None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    raise BackendError(f"unexpected Redis reply {value!r}")


def opt_text(value: Any) -> str | None:
    return None if value is None or value is False else text(value)


def number(value: Any) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(text(value))
    except ValueError:
        raise BackendError(f"expected an integer from Redis, got {value!r}") from None


@dataclass(slots=True)
class Context:
    """Shared state of one backend's ports.

    :param field_mode: ``"n"`` when map fields also get native per-field expiry, ``"l"``
        when expiry is only encoded in the value and swept lazily.
    """

    executor: Executor
    keys: Keyspace
    topology: Topology
    field_mode: str
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    async def eval(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[str | int | bytes] = (),
        *,
        readonly: bool = False,
    ) -> Any:
        """Run one script (one round trip) and return its reply."""
        return (await self.executor.run(script_op(script(name), keys, args, readonly=readonly)))[0]

    async def command(self, *args: Any, route: str | None, readonly: bool = False) -> Any:
        return (await self.executor.run(Op([args], route=route, readonly=readonly)))[0]

    def script_op(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[str | int | bytes] = (),
        *,
        readonly: bool = False,
    ) -> Op:
        return script_op(script(name), keys, args, readonly=readonly)

    def check_colocated(self, keys: Sequence[str], what: str) -> None:
        """On a cluster, keys of one operation must hash to one slot (share a tag)."""
        if not self.topology.cluster or len(keys) < 2:
            return
        slots = {self.topology.keyslot(k) for k in keys}
        if len(slots) > 1:
            raise ValueError(
                f"{what}: the keys {list(keys)!r} live in different cluster slots; mark the keys "
                "one operation touches together with the same co-location tag "
                "(uwsx.ports.colocate)"
            )

    def check_size(self, value: str, what: str = "value") -> None:
        """Refuse a value the server would reject (it would also drop the connection)."""
        limit = self.max_value_bytes
        if len(value) * 4 > limit and len(value.encode("utf-8")) > limit:
            raise BackendError(
                f"{what} is larger than the backend accepts ({limit} bytes); nothing was stored"
            )


def seconds(value_ms: int) -> float:
    return value_ms / 1000.0


def finite_seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    """A finite number of seconds, > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)
