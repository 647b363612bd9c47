"""The whole port contract suite on a 3-master Valkey cluster."""

from __future__ import annotations

import pytest

from tests.integration.redis_servers import RedisDeployment
from uwsx.testing.contract import AllPortsContract


class TestValkeyCluster(AllPortsContract):
    @pytest.fixture
    def uwsx_backend_target(self, valkey_cluster: RedisDeployment) -> str:
        return valkey_cluster.url
