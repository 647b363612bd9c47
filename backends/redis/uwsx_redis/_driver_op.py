"""One port operation as the executor sees it: its commands, where they go, and its state."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from uwsx_redis._driver import Node
from uwsx_redis._scripts import Script

__all__ = ["ABANDONED", "DONE", "QUEUED", "SENT", "Op", "script_op"]

QUEUED, SENT, DONE, ABANDONED = range(4)


class Op:
    """Commands for one port operation, sent back to back on one connection."""

    __slots__ = (
        "asking",
        "commands",
        "connect_failures",
        "deadline",
        "error",
        "future",
        "lost",
        "node",
        "read_timeout",
        "readonly",
        "redirects",
        "replies",
        "route",
        "scripts",
        "sent_to",
        "state",
        "timer",
        "tolerate",
        "unsent",
    )

    def __init__(
        self,
        commands: Sequence[tuple[Any, ...]],
        *,
        route: str | None = None,
        node: Node | None = None,
        readonly: bool = False,
        scripts: dict[int, Script] | None = None,
        read_timeout: float | None = None,
        tolerate: bool = False,
    ) -> None:
        self.commands = list(commands)
        self.route = route
        self.node = node
        self.readonly = readonly
        self.scripts = scripts or {}
        #: a blocking command (WAIT) may keep the reply this long beyond socket_timeout
        self.read_timeout = read_timeout
        #: return error replies instead of raising BackendError
        self.tolerate = tolerate
        self.state = QUEUED
        self.deadline = 0.0
        self.future: asyncio.Future[list[Any]] | None = None
        #: fails the future at the deadline (armed by the executor, cancelled when done)
        self.timer: asyncio.TimerHandle | None = None
        #: the server the last round trip went to (NOSCRIPT reloads the script there)
        self.sent_to: Node | None = None
        self.replies: list[Any] | None = None
        self.unsent: BaseException | None = None
        self.lost: BaseException | None = None
        self.asking: Node | None = None
        self.connect_failures = 0
        self.redirects = 0
        self.error: BaseException | None = None

    def wire(self) -> list[tuple[Any, ...]]:
        if self.asking is not None:
            return [("ASKING",), *self.commands]
        return self.commands


def script_op(
    script: Script,
    keys: Sequence[str],
    args: Sequence[str | int | bytes],
    *,
    readonly: bool = False,
) -> Op:
    """An EVALSHA op routed by its first key (all keys share a slot by construction)."""
    return Op(
        [("EVALSHA", script.sha, len(keys), *keys, *args)],
        route=keys[0] if keys else None,
        readonly=readonly,
        scripts={0: script},
    )
