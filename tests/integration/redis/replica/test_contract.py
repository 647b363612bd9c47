"""The log and stream contracts on a primary with one attached replica: the server offers
``replica_wait``, so the contract's replica test runs its positive branch."""

from __future__ import annotations

import pytest

from tests.integration.redis_servers import RedisDeployment
from uwsx.testing.contract import BackendContract, SortedLogContract, StreamContract


class TestRedisWithReplica(BackendContract, SortedLogContract, StreamContract):
    @pytest.fixture
    def uwsx_backend_target(self, redis_replica: RedisDeployment) -> str:
        return redis_replica.url
