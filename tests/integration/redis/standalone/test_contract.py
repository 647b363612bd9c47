"""The whole port contract suite on a standalone Redis (no per-field hash TTL on 7.0: maps
take the lazy path)."""

from __future__ import annotations

import pytest

from tests.integration.redis_servers import RedisDeployment
from uwsx.testing.contract import AllPortsContract


class TestRedisStandalone(AllPortsContract):
    @pytest.fixture
    def uwsx_backend_target(self, redis_standalone: RedisDeployment) -> str:
        return redis_standalone.url
