"""Helpers shared by the sharded-bus feature tests: activation and what the backend was asked."""

from __future__ import annotations

from typing import Any

from uwsx.features.sharded_bus import ShardedBus
from uwsx.ports.backend import Backend
from uwsx.testing import (
    FaultyBackend,
    MockPlatform,
)


def prefix_shard(topic: str) -> str:
    return topic.split(":")[0]


async def active(backend: Backend, **opts: Any) -> tuple[ShardedBus, MockPlatform]:
    bus = ShardedBus(backend, **opts)
    platform = MockPlatform()
    await bus.activate(platform)
    return bus, platform


def adds(faulty: FaultyBackend) -> list[list[str]]:
    return [c.args[0] for c in faulty.faults.called("subscription.add")]


def relayed(faulty: FaultyBackend) -> list[tuple[str, dict[str, Any]]]:
    import json

    return [
        (channel, json.loads(message))
        for call in faulty.faults.called("pubsub.publish_many")
        for channel, message in call.args[0]
    ]
