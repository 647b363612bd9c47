"""uwsx storage adapter for Redis and Redis Cluster (``redis://``, ``rediss://``,
``redis+cluster://``). Open it through :func:`uwsx.connect`; the Valkey adapter reuses it."""

from __future__ import annotations

from uwsx_redis.backend import RedisBackend, open_backend

__all__ = ["RedisBackend", "open_backend"]
