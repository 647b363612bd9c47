"""Helpers shared by the group feature tests: frames published and sent on a mock platform."""

from __future__ import annotations

from uwsx.features.groups import Group
from uwsx.testing import (
    MockPlatform,
    Published,
    Sent,
)


def frames(p: MockPlatform, event: str) -> list[Published]:
    return [m for m in p.published if m.event == event]


def sent(p: MockPlatform, event: str) -> list[Sent]:
    return [s for s in p.sent if s.event == event]


async def count_is(g: Group, n: int) -> bool:
    return await g.count() == n
