"""Helpers shared by the presence feature tests: users, and the frames they receive."""

from __future__ import annotations

from typing import Any

from tests.helpers import settle
from uwsx.features.presence import Presence
from uwsx.testing import (
    MockConnection,
    MockPlatform,
    Published,
)


def pick(user: dict[str, Any]) -> dict[str, Any]:
    return {k: user[k] for k in ("id", "name") if k in user}


def user(uid: str, name: str | None = None, **extra: Any) -> MockConnection:
    data: dict[str, Any] = {"id": uid, **extra}
    if name is not None:
        data["name"] = name
    return MockConnection(user_data=data)


def diffs(p: MockPlatform, topic: str = "room") -> list[Published]:
    return [
        m for m in p.published if m.topic == "__presence:" + topic and m.event == "presence_diff"
    ]


def states(p: MockPlatform) -> list[Any]:
    return [s for s in p.sent if s.event == "presence_state"]


async def flushed(presence: Presence) -> None:
    await settle()
    presence.flush_diffs()
