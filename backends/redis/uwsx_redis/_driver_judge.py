"""What the replies of a round trip mean: finished, failed, or provably not run and resent.

Only what provably did not run is resent: an op that could not get a connection (up to
``connect_attempts``), or whose reply is ``NOSCRIPT`` (the script is loaded first),
``MOVED``/``ASK`` (the slot map is refreshed, or the op is sent with ``ASKING``), or
``TRYAGAIN``/``LOADING``/``READONLY``/``CLUSTERDOWN`` (after a pause). An op whose connection
broke after the write is :class:`~uwsx.errors.Indeterminate` (``Unavailable`` when read-only);
any other error reply is a :class:`~uwsx.errors.BackendError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    TryAgainError,
)

from uwsx.errors import BackendError, Indeterminate, Unavailable
from uwsx_redis._driver import DriverOptions, Node, Topology
from uwsx_redis._driver_op import ABANDONED, DONE, QUEUED, Op
from uwsx_redis._driver_wire import load_scripts
from uwsx_redis._scripts import Script

__all__ = ["Judge", "Plan", "describe"]

_MAX_REDIRECTS = 12
_RETRYABLE = (TryAgainError, BusyLoadingError, ReadOnlyError, ClusterDownError)


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class Plan(NamedTuple):
    """What to do before resending: refresh the slot map, pause, load scripts on nodes."""

    refresh: bool
    pause: bool
    loads: dict[Node, dict[str, Script]]


class Judge:
    """Finishes ops from their replies and prepares the resends (the executor's base)."""

    def __init__(self, topology: Topology, options: DriverOptions) -> None:
        self.topology = topology
        self.options = options
        #: counters for diagnostics and metrics
        self.stats: dict[str, int] = {
            "ops": 0,
            "batches": 0,
            "round_trips": 0,
            "resent": 0,
            "indeterminate": 0,
            "unavailable": 0,
        }

    @staticmethod
    def _abandon(op: Op) -> None:
        if op.state == QUEUED:
            op.state = ABANDONED
        if op.timer is not None:
            op.timer.cancel()
            op.timer = None
        fut = op.future
        if fut is None:
            return
        # The caller is gone: consume its error (one already set, or a late one) so asyncio
        # does not log it as never retrieved.
        if fut.done():
            _consume(fut)
        else:
            fut.add_done_callback(_consume)

    @staticmethod
    def _finish(
        op: Op, *, replies: list[Any] | None = None, error: BaseException | None = None
    ) -> None:
        op.state = DONE
        if op.timer is not None:
            op.timer.cancel()
            op.timer = None
        fut = op.future
        if fut is None or fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(replies or [])

    def _decide(self, ops: Sequence[Op]) -> tuple[list[Op], Plan]:
        """Finish what is decided; return the ops to send again and how."""
        retry: list[Op] = []
        refresh = pause = False
        loads: dict[Node, dict[str, Script]] = {}
        for op in ops:
            if op.state == DONE:  # refused before sending (an argument Redis cannot take)
                continue
            if op.state == ABANDONED:
                self._finish(op, error=Unavailable("abandoned by its caller before sending"))
                continue
            if op.lost is not None:
                kind = Unavailable if op.readonly else Indeterminate
                what = "" if op.readonly else "; the operation may have been applied"
                self._finish(op, error=kind(f"Redis connection lost: {describe(op.lost)}{what}"))
                continue
            if op.unsent is not None:
                op.connect_failures += 1
                if op.connect_failures >= self.options.connect_attempts:
                    self._finish(op, error=Unavailable(f"Redis unreachable: {describe(op.unsent)}"))
                else:
                    refresh = pause = True
                    retry.append(op)
                continue
            assert op.replies is not None
            verdict = self._verdict(op, loads)
            if verdict == "done":
                continue
            op.redirects += 1
            if op.redirects > _MAX_REDIRECTS:
                self._finish(op, error=Unavailable(f"Redis kept redirecting: {op.error}"))
                continue
            refresh = refresh or verdict in ("refresh", "pause")
            pause = pause or verdict == "pause"
            # The reply proves it did not run: until it is written again it is unsent (a
            # deadline then means Unavailable, and a caller that leaves cancels the resend).
            op.state = QUEUED
            retry.append(op)
        return retry, Plan(refresh, pause, loads)

    def _verdict(self, op: Op, loads: dict[Node, dict[str, Script]]) -> str:
        assert op.replies is not None
        op.asking = None
        for index, reply in enumerate(op.replies):
            if not isinstance(reply, BaseException):
                continue
            op.error = reply
            if isinstance(reply, NoScriptError) and index in op.scripts:
                script = op.scripts[index]
                assert op.sent_to is not None
                loads.setdefault(op.sent_to, {})[script.sha] = script
                return "load"
            if isinstance(reply, MovedError):
                return "refresh"
            if isinstance(reply, AskError):
                target = self.topology.node_at(reply.host, reply.port)
                if target is None:
                    return "refresh"
                op.asking = target
                return "ask"
            if isinstance(reply, _RETRYABLE):
                return "pause"
            if op.tolerate:
                continue
            self._finish(op, error=BackendError(f"Redis error: {describe(reply)}"))
            return "done"
        self._finish(op, replies=op.replies)
        return "done"

    async def _again(self, retry: list[Op], plan: Plan) -> list[Op]:
        """Load scripts, refresh, pause as planned; return the ops still worth resending."""
        self.stats["resent"] += len(retry)
        for node, scripts in plan.loads.items():
            # errors surface as the resent call failing again
            with contextlib.suppress(Exception):
                await load_scripts(self, node, list(scripts.values()))
        if plan.refresh and self.topology.cluster:
            with contextlib.suppress(Exception):
                await self.topology.refresh()
        if plan.pause:
            await self._pause(retry)
        now = asyncio.get_running_loop().time()
        alive = []
        for op in retry:
            if op.deadline <= now or op.state == ABANDONED:
                self._finish(op, error=Unavailable(f"Redis not ready in time: {op.error}"))
            else:
                op.state = QUEUED
                alive.append(op)
        return alive

    async def _pause(self, ops: list[Op]) -> None:
        raise NotImplementedError
