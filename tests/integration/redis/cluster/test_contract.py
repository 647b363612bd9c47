"""The whole port contract suite on a 3-master Redis Cluster: every multi-key operation must
stay in one slot (a CROSSSLOT error fails the test)."""

from __future__ import annotations

import pytest

from tests.integration.redis_servers import RedisDeployment
from uwsx.testing.contract import AllPortsContract


class TestRedisCluster(AllPortsContract):
    @pytest.fixture
    def uwsx_backend_target(self, redis_cluster: RedisDeployment) -> str:
        return redis_cluster.url
