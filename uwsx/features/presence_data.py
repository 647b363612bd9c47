"""What presence (and cursors) broadcast about a user, and presence's storage encoding.

User data is never broadcast raw: ``__subscriptions`` and ``remoteAddress`` are removed, the
``select`` function picks the public fields, a one-time warning names a sensitive-looking key
that survived ``select``, and a deep :func:`~uwsx.redact.strip_internal` always runs last (so
even an identity ``select`` cannot leak ``token``-like or ``__`` keys). The result must be JSON.

Presence stores one map per topic, ``presence:topic:<topic>``, with one field per (user,
instance): ``<escaped user key>|<instance id>`` whose value is JSON ``{data, ts}`` and whose
deadline is the presence TTL. ``|`` and ``%`` in user keys are percent-escaped so the prefix
``<escaped user key>|`` names exactly one user's fields (the atomic "first holder" / "last
holder" counts of ``map_put``/``map_remove`` rely on that).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from uwsx.features._json import dumps, loads
from uwsx.redact import make_sensitive_warner, strip_internal

__all__ = [
    "HIDDEN_USER_FIELDS",
    "SEPARATOR",
    "UserData",
    "decode_topic_map",
    "encode_entry",
    "field_name",
    "user_prefix",
]

HIDDEN_USER_FIELDS = frozenset({"__subscriptions", "remoteAddress"})
SEPARATOR = "|"

Select = Callable[[dict[str, Any]], Any]


class UserData:
    """Turns a connection's ``user_data`` into the public data broadcast for it.

    :param select: picks the public fields (``None``: everything, stripped).
    :param owner: names the feature in warnings and errors.
    """

    def __init__(self, select: Select | None, *, owner: str) -> None:
        if select is not None and not callable(select):
            raise TypeError("select must be a function")
        self._select: Select = select if select is not None else strip_internal
        self._owner = owner
        self._warn = make_sensitive_warner(owner, logging.getLogger(f"uwsx.{owner}").warning)

    @staticmethod
    def visible(user_data: Mapping[str, Any]) -> dict[str, Any]:
        """``user_data`` without the fields that are never broadcast."""
        return {k: v for k, v in user_data.items() if k not in HIDDEN_USER_FIELDS}

    def public(self, user_data: Mapping[str, Any]) -> Any:
        """The sanitised public data.

        :raises TypeError: ``select`` returned something that is not JSON-serialisable.
        """
        selected = self._select(self.visible(user_data))
        self._warn(selected)
        clean = strip_internal(selected)
        try:
            dumps(clean)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{self._owner}: select() must return JSON-serializable data") from exc
        return clean


def _escape(user_key: str) -> str:
    return user_key.replace("%", "%25").replace(SEPARATOR, "%7C")


def _unescape(escaped: str) -> str:
    return escaped.replace("%7C", SEPARATOR).replace("%25", "%")


def user_prefix(user_key: str) -> str:
    """The field-name prefix shared by every instance's field for ``user_key``."""
    return _escape(user_key) + SEPARATOR


def field_name(user_key: str, instance_id: str) -> str:
    return user_prefix(user_key) + instance_id


def encode_entry(data: Any, ts: float) -> str:
    """A field value: the public data and the wall-clock time (ms) it was written."""
    return dumps({"data": data, "ts": int(ts * 1000)})


def decode_topic_map(items: Mapping[str, str]) -> dict[str, Any]:
    """``{user key: data}`` from a topic map; per user the value with the newest ``ts`` wins.
    Corrupt fields are skipped."""
    best: dict[str, tuple[float, Any]] = {}
    for name, raw in items.items():
        escaped, sep, _instance = name.rpartition(SEPARATOR)
        if not sep or not escaped:
            continue
        try:
            entry = loads(raw)
        except ValueError:
            continue
        if not isinstance(entry, dict) or "data" not in entry:
            continue
        ts = entry.get("ts")
        stamp = float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else 0.0
        key = _unescape(escaped)
        current = best.get(key)
        if current is None or stamp >= current[0]:
            best[key] = (stamp, entry["data"])
    return {key: data for key, (_, data) in best.items()}
