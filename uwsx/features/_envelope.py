"""Validation of envelopes arriving from the cluster bus.

Anyone with write access to the backend can publish on the bus channel, so received envelopes
are checked before anything reaches local subscribers: size, JSON shape, topic and event syntax,
and the system-topic policy (topics starting with ``__`` are reserved for the server).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["DEFAULT_MAX_ENVELOPE_BYTES", "EnvelopeValidator", "is_valid_bus_topic"]

DEFAULT_MAX_ENVELOPE_BYTES = 1024 * 1024
_MAX_NAME = 256


def is_valid_bus_topic(topic: object) -> bool:
    """A str of 1..256 characters with no control character (< 32), ``"`` or ``\\``."""
    if not isinstance(topic, str) or not 1 <= len(topic) <= _MAX_NAME:
        return False
    return not any(ord(ch) < 32 or ch in '"\\' for ch in topic)


class EnvelopeValidator:
    """Size and envelope checks with a system-topic policy.

    :param max_bytes: largest accepted raw message (UTF-8 bytes).
    :param allow_system_topics: accept every ``__``-prefixed topic.
    :param allowed_system_topics: ``__`` topics accepted even when the above is False.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        allow_system_topics: bool = False,
        allowed_system_topics: Iterable[str] = (),
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_envelope_bytes must be a positive integer, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.allow_system_topics = bool(allow_system_topics)
        self.allowed_system_topics = frozenset(allowed_system_topics)

    def accept_raw(self, message: object) -> bool:
        if isinstance(message, str):
            size = len(message.encode("utf-8"))
        elif isinstance(message, bytes | bytearray | memoryview):
            size = len(message)
        else:
            return False
        return size <= self.max_bytes

    def accept(self, topic: object, event: object) -> bool:
        if not is_valid_bus_topic(topic):
            return False
        if not isinstance(event, str) or not 1 <= len(event) <= _MAX_NAME:
            return False
        assert isinstance(topic, str)
        return (
            not topic.startswith("__")
            or self.allow_system_topics
            or topic in self.allowed_system_topics
        )

    @staticmethod
    def entry(item: Any) -> tuple[Any, Any, Any] | None:
        """``(topic, event, data)`` of a dict entry, or None when it is not a dict."""
        if not isinstance(item, dict):
            return None
        return item.get("topic"), item.get("event"), item.get("data")
