"""The adapter's Lua scripts: read from the ``lua/`` files next to this module, loaded once per
server and called by SHA (EVALSHA); a ``NOSCRIPT`` reply makes the executor load the script on
that node and send the call again (nothing ran, so resending is safe)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["ALL_SCRIPTS", "Script", "script"]

#: Scripts that start with the shared helpers in ``lua/prelude.lua``.
_WITH_PRELUDE = frozenset(
    {
        "kv_set_nx",
        "kv_expire",
        "kv_ttl",
        "kv_del",
        "map_put",
        "map_put_many",
        "map_get",
        "map_items",
        "map_remove",
        "map_sweep",
        "map_put_bounded",
        "bucket_take",
        "bucket_ban",
    }
)

ALL_SCRIPTS: tuple[str, ...] = (
    "kv_set_nx",
    "kv_cas",
    "kv_cad",
    "kv_cae",
    "kv_expire",
    "kv_ttl",
    "kv_del",
    "kv_incr",
    "map_put",
    "map_put_many",
    "map_get",
    "map_items",
    "map_remove",
    "map_sweep",
    "map_put_bounded",
    "bucket_take",
    "bucket_ban",
    "log_append",
    "log_bounds",
    "log_delete",
    "stream_append",
    "stream_bounds",
    "lock_acquire",
    "lock_owned",
    "lock_holder",
    "queue_jobs",
    "queue_tasks",
)


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script: its name, full source and SHA-1 (what EVALSHA takes)."""

    name: str
    source: str
    sha: str


def _read(name: str) -> str:
    return resources.files("uwsx_redis").joinpath("lua", f"{name}.lua").read_text("utf-8")


@cache
def script(name: str) -> Script:
    """The script ``name`` (cached; sources are read once per process)."""
    body = _read(name)
    source = _read("prelude") + "\n" + body if name in _WITH_PRELUDE else body
    return Script(name, source, hashlib.sha1(source.encode("utf-8")).hexdigest())
