"""JSON as it goes on the wire: compact, UTF-8 kept as is, ``None`` for missing data."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "loads"]

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Serialise ``value``; raises ``TypeError``/``ValueError`` for what JSON cannot carry
    (sets, bytes, NaN, cycles...)."""
    return _ENCODER.encode(value)


def loads(text: str | bytes) -> Any:
    return json.loads(text)
