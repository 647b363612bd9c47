"""Helper fixtures for the Redis tests (:mod:`tests.integration.redis.support`); the session
deployments (``redis_standalone``, ``redis_cluster``, ``redis_replica``) live in
``tests/conftest.py`` so feature tests share them."""

from __future__ import annotations

from tests.integration.redis.support import open_redis, wire

__all__ = ["open_redis", "wire"]
