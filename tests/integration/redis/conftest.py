"""Session-scoped Redis deployments (standalone, cluster, primary + replica) for the tests in
this directory, found or started once per session by ``tests.integration.redis_servers``, and
the shared helper fixtures of :mod:`tests.integration.redis.support`."""

from __future__ import annotations

from tests.integration.redis.support import open_redis, wire
from tests.integration.redis_servers import deployment_fixture

__all__ = ["open_redis", "redis_cluster", "redis_replica", "redis_standalone", "wire"]

redis_standalone = deployment_fixture("redis", "standalone")
redis_cluster = deployment_fixture("redis", "cluster")
redis_replica = deployment_fixture("redis", "replica")
