"""Killing one master of a 3-master cluster and starting it again on the same port (it keeps
its slots through its nodes file): operations on its slots fail fast while it is down, work
again afterwards, and a sharded subscription on that node is resubscribed with the loss
reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.redis.support import Opener, until
from tests.integration.redis_servers import throwaway
from uwsx.errors import Unavailable
from uwsx.ports.pubsub import LossWindow


def _cluster_ok(client: Any) -> bool:
    return "cluster_state:ok" in client.execute_command("CLUSTER", "INFO").decode()


async def test_restarted_master_is_reconnected_and_resubscribed(
    tmp_path: Path, open_redis: Opener
) -> None:
    with throwaway("redis", "cluster", tmp_path) as dep:
        backend = await open_redis(
            dep.url, socket_timeout=1.0, command_timeout=3.0, health_interval=0.5
        )
        victim = backend.topology.primaries()[0].name
        index = next(i for i, p in enumerate(dep.ports) if victim.endswith(f":{p}"))
        channel = next(
            f"c{i}"
            for i in range(1000)
            if backend.topology.node_for(backend.key_prefix + f"c{i}").name == victim
        )
        received: list[str] = []
        losses: list[LossWindow] = []
        sub = await backend.pubsub.subscribe(
            [channel], lambda c, m: received.append(m), sharded=True, on_loss=losses.append
        )
        await backend.kv.set(channel, "before")

        dep.kill(index)
        await until(lambda: not sub.healthy, "the sharded connection's loss")
        with pytest.raises(Unavailable):
            await backend.kv.set(channel, "while down")

        dep.start(index)
        clients = [dep.client(i) for i in range(len(dep.ports))]
        await until(lambda: all(_cluster_ok(c) for c in clients), "the cluster to recover", 30)
        await until(lambda: bool(losses), "the loss report", 30)
        assert losses[0].started <= losses[0].ended
        assert sub.healthy
        await backend.pubsub.publish(channel, "after", sharded=True)
        await until(lambda: "after" in received, "delivery after the restart")
        await backend.kv.set(channel, "after")
        assert await backend.kv.get(channel) == "after"
        assert (await backend.log.append(channel, "e", "{}", max_size=5)).seq >= 1
