"""Redis Cluster specifics (see ``tests.integration.redis.cluster_cases``)."""

from __future__ import annotations

import pytest

from tests.integration.redis.cluster_cases import ClusterCases
from tests.integration.redis_servers import RedisDeployment


class TestRedisClusterSlots(ClusterCases):
    @pytest.fixture
    def cluster(self, redis_cluster: RedisDeployment) -> RedisDeployment:
        return redis_cluster
