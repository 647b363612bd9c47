"""Valkey cluster specifics (see ``tests.integration.redis.cluster_cases``)."""

from __future__ import annotations

import pytest

from tests.integration.redis.cluster_cases import ClusterCases
from tests.integration.redis_servers import RedisDeployment


class TestValkeyClusterSlots(ClusterCases):
    @pytest.fixture
    def cluster(self, valkey_cluster: RedisDeployment) -> RedisDeployment:
        return valkey_cluster
