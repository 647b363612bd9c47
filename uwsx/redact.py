"""Redaction of credentials in URLs and of sensitive fields in user data."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["make_sensitive_warner", "redact_url", "strip_internal"]

_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|pass|pwd)=)[^&#]*")
_SENSITIVE = ("token", "secret", "password", "auth", "session", "cookie", "jwt", "credential")
_WARN = (*_SENSITIVE, "key")


def redact_url(url: object) -> str:
    """Replace the password of ``scheme://user:password@host`` and ``password=``/``pass=``/
    ``pwd=`` query values by ``***``. Non-strings are returned as ``str(url)``."""
    if not isinstance(url, str) or not url:
        return "" if url == "" else str(url)
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    # The authority ends at the first / ? # outside [...] (IPv6 literals).
    depth, end = 0, len(rest)
    for i, ch in enumerate(rest):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        elif ch in "/?#" and depth == 0:
            end = i
            break
    authority, tail = rest[:end], rest[end:]
    at = -1
    depth = 0
    for i, ch in enumerate(authority):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        elif ch == "@" and depth == 0:
            at = i
    if at >= 0:
        userinfo = authority[:at]
        user, colon, password = userinfo.partition(":")
        if colon and password:
            authority = f"{user}:***{authority[at:]}"
    query, hash_sep, fragment = tail.partition("#")
    query = _QUERY_SECRET.sub(r"\1***", query)
    return f"{head}://{authority}{query}{hash_sep}{fragment}"


def _is_sensitive(key: str, words: tuple[str, ...]) -> bool:
    low = key.lower()
    return any(w in low for w in words)


def strip_internal(obj: Any, _ancestors: tuple[int, ...] = ()) -> Any:
    """A deep copy safe to broadcast and log: drops ``__``-prefixed keys, ``constructor``/
    ``prototype``, and keys that look secret (token, secret, password, auth, session, cookie,
    jwt, credential); bytes become ``"[bytes: N]"``; cycles become ``None``."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return f"[bytes: {len(obj)}]"
    if isinstance(obj, list | tuple):
        if id(obj) in _ancestors:
            return None
        inner = (*_ancestors, id(obj))
        return [strip_internal(v, inner) for v in obj]
    if isinstance(obj, dict):
        if id(obj) in _ancestors:
            return None
        inner = (*_ancestors, id(obj))
        return {
            k: strip_internal(v, inner)
            for k, v in obj.items()
            if isinstance(k, str)
            and not k.startswith("__")
            and k not in ("constructor", "prototype")
            and not _is_sensitive(k, _SENSITIVE)
        }
    return obj


def make_sensitive_warner(prefix: str, warn: Callable[[str], None]) -> Callable[[Any], None]:
    """A function that calls ``warn`` once (ever) when data carries a sensitive-looking key
    within three levels."""
    fired = False

    def find(data: Any, depth: int) -> str | None:
        if depth > 3:
            return None
        if isinstance(data, dict):
            for k, v in data.items():
                if isinstance(k, str) and _is_sensitive(k, _WARN):
                    return k
                found = find(v, depth + 1)
                if found:
                    return found
        elif isinstance(data, list | tuple):
            for v in data:
                found = find(v, depth + 1)
                if found:
                    return found
        return None

    def check(data: Any) -> None:
        nonlocal fired
        if fired:
            return
        key = find(data, 0)
        if key is not None:
            fired = True
            warn(
                f"[{prefix}] user data contains a sensitive-looking key {key!r}; it is "
                "broadcast unless your select() drops it"
            )

    return check
