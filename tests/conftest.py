"""Session-scoped real-server deployments shared by every test directory.

Each is found or started once per session (``UWSX_TEST_<KIND>_URL`` -> local binary or wheel
-> testcontainers -> skip, or fail under ``UWSX_REQUIRE_BACKENDS=1``) and stopped at the end.
Defining them here, once, lets integration and feature tests share the same servers.
"""

from __future__ import annotations

from tests.integration.pg_servers import server_fixture
from tests.integration.redis_servers import deployment_fixture

redis_standalone = deployment_fixture("redis", "standalone")
redis_cluster = deployment_fixture("redis", "cluster")
redis_replica = deployment_fixture("redis", "replica")
redis_tls = deployment_fixture("redis", "tls")
redis_tls_cluster = deployment_fixture("redis", "tls-cluster")
valkey_standalone = deployment_fixture("valkey", "standalone")
valkey_cluster = deployment_fixture("valkey", "cluster")
pg15 = server_fixture("15")
pg16 = server_fixture("16")
