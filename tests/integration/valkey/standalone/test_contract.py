"""The whole port contract suite on a standalone Valkey 9 (native per-field hash TTL), and
once more with the lazy map path forced, so both paths pass on the same server."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.redis_servers import RedisDeployment
from uwsx.testing.contract import AllPortsContract, KVContract


class TestValkeyStandalone(AllPortsContract):
    @pytest.fixture
    def uwsx_backend_target(self, valkey_standalone: RedisDeployment) -> str:
        return valkey_standalone.url


class TestValkeyLazyMaps(KVContract):
    @pytest.fixture
    def uwsx_backend_target(self, valkey_standalone: RedisDeployment) -> str:
        return valkey_standalone.url

    @pytest.fixture
    def uwsx_backend_options(self) -> dict[str, Any]:
        return {"field_expiry": "lazy"}
