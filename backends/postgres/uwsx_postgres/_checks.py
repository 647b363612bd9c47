"""Argument checks the Postgres ports share (on top of :mod:`uwsx.ports.checks`)."""

from __future__ import annotations

import math

from uwsx.errors import BackendError

__all__ = [
    "BIGINT_MAX",
    "BIGINT_MIN",
    "check_no_nul",
    "clamp_bigint",
    "prefix_range",
    "seconds",
    "wrong_kind",
]

BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -(2**63)

_KINDS = {"s": "string", "m": "map", "b": "bucket"}


def seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    """A finite number of seconds, > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be a finite number of seconds {bound}, got {value!r}")
    return float(value)


def clamp_bigint(value: int) -> int:
    return max(BIGINT_MIN, min(BIGINT_MAX, value))


def check_no_nul(value: str, what: str) -> str:
    """PostgreSQL text cannot hold NUL characters."""
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters (PostgreSQL text cannot)")
    return value


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """``(low, high)`` with every string starting with ``prefix`` in ``[low, high)`` in byte
    order (``high`` None: no upper bound), so a prefix scan can use a btree index."""
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF and not 0xD7FF <= last < 0xE000:
            chars[-1] = chr(last + 1)
            return prefix, "".join(chars)
        chars.pop()
    return prefix, None


def wrong_kind(key: str, kind: str, wanted: str) -> BackendError:
    return BackendError(f"WRONGTYPE: key {key!r} holds a {_KINDS.get(kind, kind)}, not a {wanted}")
