"""Helper fixtures for the Valkey tests, shared with the Redis tests; the session deployments
(``valkey_standalone``, ``valkey_cluster``) live in ``tests/conftest.py``."""

from __future__ import annotations

from tests.integration.redis.support import open_redis, wire

__all__ = ["open_redis", "wire"]
