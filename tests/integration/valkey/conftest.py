"""Session-scoped Valkey deployments (standalone and cluster) for the tests in this directory,
and the helper fixtures shared with the Redis tests."""

from __future__ import annotations

from tests.integration.redis.support import open_redis, wire
from tests.integration.redis_servers import deployment_fixture

__all__ = ["open_redis", "valkey_cluster", "valkey_standalone", "wire"]

valkey_standalone = deployment_fixture("valkey", "standalone")
valkey_cluster = deployment_fixture("valkey", "cluster")
