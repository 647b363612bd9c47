"""Argument checks shared by port implementations (public: third-party adapters use them) and
co-location tags."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

__all__ = [
    "check_key",
    "check_keys",
    "check_non_negative_int",
    "check_positive_int",
    "check_space_name",
    "check_ttl",
    "check_value",
    "colocate",
]


def check_key(key: object, what: str = "key") -> str:
    """Return ``key`` if it is a non-empty ``str``; raise ``TypeError``/``ValueError`` naming
    ``what`` otherwise."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a str, got {type(key).__name__}")
    if not key:
        raise ValueError(f"{what} must be a non-empty string")
    return key


def check_keys(keys: Sequence[str], what: str = "key") -> list[str]:
    if isinstance(keys, str):
        raise TypeError(f"{what}s must be a sequence of str, not a str")
    return [check_key(k, what) for k in keys]


def check_value(value: object, what: str = "value") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str (JSON text), got {type(value).__name__}")
    return value


def check_ttl(ttl: float | None, what: str = "ttl", *, optional: bool = True) -> float | None:
    """``None`` (no expiry, when ``optional``) or a finite number of seconds > 0."""
    if ttl is None:
        if optional:
            return None
        raise ValueError(f"{what} is required")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"{what} must be a positive finite number of seconds, got {ttl!r}")
    return float(ttl)


def check_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_non_negative_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def colocate(name: str) -> str:
    """Wrap ``name`` as a co-location tag: ``{name}`` with braces and ``%`` escaped.

    Keys that one atomic operation touches together must share a tag so that a clustered
    backend (Redis Cluster hashes the first ``{...}`` of a key) stores them on one shard.
    Backends without shards ignore tags. Escaping keeps a topic such as ``"}x"`` from ending the
    tag early and scattering the keys.
    """
    escaped = name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return "{" + escaped + "}"


_SPACE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_space_name(name: object, what: str = "space name") -> str:
    """A storage namespace name usable as a SQL identifier: ``[A-Za-z_][A-Za-z0-9_]*``, at most
    63 characters, not in a reserved Postgres schema (``pg_*``, ``information_schema*``)."""
    from uwsx.errors import InvalidNameError

    if not isinstance(name, str) or not _SPACE_NAME.match(name) or len(name) > 63:
        raise InvalidNameError(f"invalid {what} {name!r}: use letters, digits and _ (max 63)")
    low = name.lower()
    if low.startswith("pg_") or low.startswith("information_schema"):
        raise InvalidNameError(f"{what} {name!r} is in a reserved Postgres schema")
    return name
