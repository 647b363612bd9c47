"""Killing redis-server mid-test and starting it again on the same port: reconnect,
resubscribe, loss window reported (see ``restart_scenario``)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.redis.support import Opener, restart_scenario
from tests.integration.redis_servers import throwaway


async def test_redis_restart_reconnects_and_resubscribes(
    tmp_path: Path, open_redis: Opener
) -> None:
    with throwaway("redis", "standalone", tmp_path) as dep:
        await restart_scenario(dep, open_redis)
