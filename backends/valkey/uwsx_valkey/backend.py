"""The factory registered for ``valkey://`` URLs: the Redis adapter under the name
``valkey``, which warns when the server turns out not to be Valkey."""

from __future__ import annotations

import logging
from typing import Any

from uwsx_redis.backend import RedisBackend
from uwsx_redis.backend import open_backend as open_redis_backend

__all__ = ["open_backend"]

log = logging.getLogger("uwsx.valkey")


async def open_backend(target: object, *, key_prefix: str = "", **options: Any) -> RedisBackend:
    """Open a Valkey backend; options are those of :func:`uwsx_redis.open_backend`."""
    options.pop("backend_name", None)
    backend = await open_redis_backend(
        target, key_prefix=key_prefix, backend_name="valkey", **options
    )
    if backend.facts.flavor != "valkey":
        log.warning(
            "%s is a %s %s server, not Valkey; it works, but the redis:// scheme says so",
            backend.url,
            backend.facts.flavor,
            backend.facts.version_text,
        )
    return backend
