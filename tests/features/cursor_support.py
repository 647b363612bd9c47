"""Helpers shared by the cursor feature tests: who connects and what reaches the platforms."""

from __future__ import annotations

import json
from typing import Any

from uwsx.features.cursor import Cursor
from uwsx.testing import (
    FaultyBackend,
    MockConnection,
    MockPlatform,
    Published,
)


def alice(**extra: Any) -> MockConnection:
    return MockConnection(user_data={"id": "1", "name": "Alice", **extra})


def on(p: MockPlatform, topic: str, event: str | None = None) -> list[Published]:
    return [m for m in p.published if m.topic == topic and (event is None or m.event == event)]


def relays(faulty: FaultyBackend) -> list[dict[str, Any]]:
    out = [json.loads(c.args[1]) for c in faulty.faults.called("pubsub.publish")]
    for call in faulty.faults.called("pubsub.publish_many"):
        out.extend(json.loads(message) for _, message in call.args[0])
    return out


async def is_empty(c: Cursor, topic: str) -> bool:
    return await c.list(topic) == []
