"""PostgreSQL 15 and 16 servers (session-scoped, see ``tests.integration.pg_servers``) and the
``pg_target`` matrix every contract class here runs on: each major version with each driver."""

from __future__ import annotations

import pytest

from tests.integration.pg_servers import DRIVERS, VERSIONS, PgServer

# The session servers ``pg15`` / ``pg16`` live in tests/conftest.py (shared with feature tests).

MATRIX = [(v, d) for v in VERSIONS for d in DRIVERS]


@pytest.fixture
def pg_server(request: pytest.FixtureRequest, pg_version: str) -> PgServer:
    server: PgServer = request.getfixturevalue(f"pg{pg_version}")
    return server


@pytest.fixture(params=VERSIONS, ids=lambda v: f"pg{v}")
def pg_version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=DRIVERS)
def pg_driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pg_url(pg_server: PgServer, pg_driver: str) -> str:
    """The uwsx URL of the server under test with the driver under test."""
    return pg_server.url_for(pg_driver)
