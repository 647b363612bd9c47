"""The whole port contract suite on PostgreSQL 15 and 16, with asyncpg and with psycopg."""

from __future__ import annotations

import pytest

from uwsx.testing.contract import AllPortsContract


class TestPostgres(AllPortsContract):
    @pytest.fixture
    def uwsx_backend_target(self, pg_url: str) -> str:
        return pg_url
