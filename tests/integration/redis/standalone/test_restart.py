"""Killing redis-server mid-test and starting it again on the same port: reconnect,
resubscribe, loss window reported (see ``restart_scenario``); log epochs change across any
restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration.redis.support import Opener, restart_scenario, until
from tests.integration.redis_servers import throwaway
from uwsx.errors import Unavailable
from uwsx.ports.sorted_log import LogBounds, SortedLog


async def _bounds_when_back(log: SortedLog, name: str) -> LogBounds:
    for _ in range(50):
        try:
            return await log.bounds(name)
        except Unavailable:
            await asyncio.sleep(0.1)
    return await log.bounds(name)


async def test_redis_restart_reconnects_and_resubscribes(
    tmp_path: Path, open_redis: Opener
) -> None:
    with throwaway("redis", "standalone", tmp_path) as dep:
        await restart_scenario(dep, open_redis)


async def test_restart_that_keeps_the_data_still_changes_log_epochs(
    tmp_path: Path, open_redis: Opener
) -> None:
    """With AOF (fsync always) a restarted server keeps every log, but it cannot vouch for
    appends a less strict setup would have lost: the epoch changes while the seqs go on."""
    with throwaway("redis", "standalone", tmp_path) as dep:
        server = dep.client()
        try:
            server.config_set("appendfsync", "always")
            server.config_set("appendonly", "yes")
            await until(
                lambda: (
                    server.info("persistence")["aof_rewrite_in_progress"] == 0
                    and server.info("persistence")["aof_enabled"] == 1
                ),
                "the AOF to be written",
            )
        finally:
            server.close()
        dep.argvs[0] += ["--appendonly", "yes", "--appendfsync", "always"]
        backend = await open_redis(dep.url, socket_timeout=1.0, command_timeout=3.0)
        for log in (backend.log, backend.stream):
            for _ in range(3):
                await log.append("topic", "e", "{}", max_size=10)
        before = [await backend.log.bounds("topic"), await backend.stream.bounds("topic")]

        dep.kill(0)
        dep.start(0)
        after = []
        for log in (backend.log, backend.stream):
            bounds = await _bounds_when_back(log, "topic")
            after.append(bounds)
            assert (await log.append("topic", "e", "{}", max_size=10)).seq == 4
        for old, new in zip(before, after, strict=True):
            assert (new.oldest, new.newest) == (old.oldest, old.newest) == (1, 3)
            assert new.epoch != old.epoch
