"""Key layout: every Redis key and channel uwsx uses, and the hash tags that keep each atomic
operation in one cluster slot.

* KV keys are ``<key_prefix><key>`` verbatim; a feature that needs several keys in one
  operation marks them with a co-location tag (:func:`uwsx.ports.colocate`).
* Everything the adapter derives itself lives under ``<key_prefix>__uwsx__:`` and carries the
  tag of the name it belongs to, so a log's counter, entries and dedup records, or a lock's
  lease and fence counter, always hash to one slot::

      <P>__uwsx__:<space>:{<log>}:n       counter hash {seq, epoch} (never expires)
      <P>__uwsx__:<space>:{<log>}:e       SortedLog entries (sorted set, score = seq)
      <P>__uwsx__:<space>:{<log>}:x       Stream entries (ids <seq>-0)
      <P>__uwsx__:<space>:{<log>}:p       Stream producer index (producer -> dedup deadline)
      <P>__uwsx__:<space>:{<log>}:d:<id>  Stream dedup records of producer <id>
      <P>__uwsx__:lock:{<key>}:l          lease "<fence>:<owner>" with a TTL
      <P>__uwsx__:lock:{<key>}:f          fence counter (never expires)
      <P>__uwsx__:<space>:{<space>}:...   queue and task state (one slot per queue space)

  ``KV.delete_prefix`` never touches that reserved namespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from uwsx.ports.checks import colocate

__all__ = ["RESERVED", "Keyspace", "LogKeys", "glob_escape", "tag_of", "untag"]

#: Namespace (after the key prefix) of every key the adapter derives itself.
RESERVED = "__uwsx__:"

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_UNESCAPE = re.compile(r"%(25|7B|7D)")
_DECODED = {"25": "%", "7B": "{", "7D": "}"}


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a SCAN MATCH pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def untag(escaped: str) -> str:
    """Invert the escaping :func:`uwsx.ports.colocate` applies inside a tag."""
    return _UNESCAPE.sub(lambda m: _DECODED[m.group(1)], escaped)


def tag_of(rest: str) -> str | None:
    """The name inside the leading ``{...}`` tag of ``rest``, or None if it has none."""
    if not rest.startswith("{"):
        return None
    end = rest.find("}")
    if end < 0:
        return None
    return untag(rest[1:end])


@dataclass(frozen=True, slots=True)
class LogKeys:
    """The keys of one log or stream; all share the log's hash tag."""

    counter: str
    entries: str
    stream: str
    producers: str
    dedup_prefix: str

    def dedup(self, producer: str) -> str:
        return self.dedup_prefix + producer


class Keyspace:
    """Maps port-level names to Redis keys and channels under one ``key_prefix``."""

    __slots__ = ("prefix", "reserved")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.reserved = prefix + RESERVED

    def kv(self, key: str) -> str:
        return self.prefix + key

    def channel(self, channel: str) -> str:
        return self.prefix + channel

    def strip(self, name: str) -> str:
        """Remove the key prefix from a key or channel name the server reported."""
        return name[len(self.prefix) :] if name.startswith(self.prefix) else name

    def is_reserved(self, key: str) -> bool:
        return key.startswith(self.reserved)

    def log_base(self, space: str) -> str:
        return f"{self.reserved}{space}:"

    def log(self, space: str, name: str) -> LogKeys:
        base = self.log_base(space) + colocate(name)
        return LogKeys(
            counter=base + ":n",
            entries=base + ":e",
            stream=base + ":x",
            producers=base + ":p",
            dedup_prefix=base + ":d:",
        )

    def log_pattern(self, space: str, name_prefix: str) -> str:
        """SCAN pattern matching every key of the logs whose name starts with
        ``name_prefix``. Escaping is a prefix code, so the escaped prefix is a prefix of the
        escaped name exactly when the name starts with ``name_prefix``."""
        escaped = colocate(name_prefix)[:-1]  # drop the closing brace: a prefix of the tag
        return glob_escape(self.log_base(space) + escaped) + "*"

    def lock(self, key: str) -> tuple[str, str]:
        """``(lease, fence counter)`` of a lock."""
        base = f"{self.reserved}lock:{colocate(key)}"
        return base + ":l", base + ":f"

    def queue_base(self, space: str) -> str:
        """Every key of a queue space shares the space's tag (one slot per space)."""
        return f"{self.reserved}{space}:{colocate(space)}:"
