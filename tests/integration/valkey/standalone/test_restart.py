"""Killing valkey-server mid-test and starting it again on the same port."""

from __future__ import annotations

from pathlib import Path

from tests.integration.redis.support import Opener, restart_scenario
from tests.integration.redis_servers import throwaway


async def test_valkey_restart_reconnects_and_resubscribes(
    tmp_path: Path, open_redis: Opener
) -> None:
    with throwaway("valkey", "standalone", tmp_path) as dep:
        await restart_scenario(dep, open_redis)
