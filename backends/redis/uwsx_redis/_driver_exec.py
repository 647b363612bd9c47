"""The command executor: auto-pipelining, one round trip per batch, and honest errors.

Every port operation becomes one :class:`Op` (one or a few commands that must run back to back
on one connection, e.g. a script call followed by ``WAIT``). Ops submitted during one
event-loop tick, from any number of tasks, are sent as one pipeline per server, in issue
order. Each server has a *lane*: a task started by the first op of a tick, which writes what
the tick issued on its next step (a lone op leaves after one tick: no added latency). While a
lane's pipeline awaits its replies, new ops for that server wait and leave together as the
next pipeline as soon as the replies are in, so single ops from successive ticks are coalesced
and one caller's ops reach the server in the order it issued them. A pipeline carries at most
``max_batch`` ops; the rest wait for the next one (a batch sent on another connection could
overtake the pipeline ahead of it). Ops of a pipeline that must be resent (``MOVED``,
``TRYAGAIN``...) are resent before the lane's next pipeline leaves, for the same reason.

Every op has a deadline (``command_timeout``, queueing included): a timer fails its caller
with :class:`~uwsx.errors.Unavailable` if it was never sent (or only answered by a reply that
proves it did not run), :class:`~uwsx.errors.Indeterminate` if it was. A call of several ops
that fails with ``Unavailable`` while another of its write ops was applied or may have been is
:class:`~uwsx.errors.Indeterminate` as a whole.

What may be resent, and what the caller is told otherwise:

* the connection could not be had (refused, pool exhausted): nothing was sent, retried up to
  ``connect_attempts`` times within the deadline, then :class:`~uwsx.errors.Unavailable`;
* ``NOSCRIPT`` (script cache flushed, server restarted): the script is loaded on that node and
  the call resent; ``MOVED``/``ASK``/``TRYAGAIN``/``LOADING``/``READONLY``/``CLUSTERDOWN``:
  the slot map is refreshed and the call resent, all within the deadline;
* the connection broke or timed out after the pipeline was written:
  :class:`~uwsx.errors.Indeterminate` (a read-only operation reports ``Unavailable``);
* any other error reply (``WRONGTYPE``, a script error): :class:`~uwsx.errors.BackendError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from uwsx import _runtime
from uwsx.errors import Indeterminate, Unavailable
from uwsx_redis._driver import DriverOptions, Node, Topology
from uwsx_redis._driver_judge import Judge, Plan, describe
from uwsx_redis._driver_op import ABANDONED, DONE, QUEUED, SENT, Op, script_op
from uwsx_redis._driver_wire import load_scripts, round_trip
from uwsx_redis._scripts import Script

__all__ = ["Executor", "Op", "script_op"]


def _may_have_applied(op: Op) -> bool:
    """True when a write op was written and not proven unapplied: in flight, answered, or
    failed as indeterminate."""
    if op.readonly:
        return False
    if op.state == SENT:
        return True
    fut = op.future
    if op.state != DONE or fut is None or not fut.done() or fut.cancelled():
        return False
    error = fut.exception()
    return error is None or isinstance(error, Indeterminate)


class _Lane:
    """Ops waiting for one server, and whether its pump task runs / has a pipeline out."""

    __slots__ = ("active", "queue", "sending")

    def __init__(self) -> None:
        self.queue: list[Op] = []
        self.active = False
        self.sending = False


class Executor(Judge):
    """Sends ops to the topology, batching per tick; see the module docstring."""

    def __init__(self, topology: Topology, options: DriverOptions) -> None:
        super().__init__(topology, options)
        self._lanes: dict[Node, _Lane] = {}
        self._closed = False
        self._tasks = _runtime.current().task_group("uwsx-redis-exec")

    # -- public ------------------------------------------------------------------------
    async def run(self, op: Op) -> list[Any]:
        """Send one op and return its replies (one per command)."""
        return (await self.run_all((op,)))[0]

    async def run_all(self, ops: Sequence[Op]) -> list[list[Any]]:
        """Send several ops in the same round trip; replies in order."""
        if self._closed:
            raise Unavailable("the Redis backend is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.command_timeout
        blocking = False
        for op in ops:
            # A blocking command (WAIT) may take its own timeout on top of the deadline.
            if op.read_timeout:
                blocking = True
                op.deadline = deadline + op.read_timeout
            else:
                op.deadline = deadline
            op.future = loop.create_future()
            op.timer = loop.call_at(op.deadline, self._expire, op)
        self.stats["ops"] += len(ops)
        if self.options.auto_pipeline and not blocking:
            self._enqueue(ops)
        else:
            self._start(list(ops))
        results: list[list[Any]] = []
        try:
            for op in ops:
                assert op.future is not None
                results.append(await op.future)
        except BaseException as exc:
            for op in ops:
                self._abandon(op)
            if isinstance(exc, Unavailable) and any(_may_have_applied(op) for op in ops):
                # One op was not applied but another of the same call was (or may have
                # been): the call as a whole is not "not applied".
                self.stats["indeterminate"] += 1
                raise Indeterminate(
                    f"{exc}; other commands of this operation were sent, so it may have been"
                    " partly applied"
                ) from exc
            if isinstance(exc, Indeterminate):
                self.stats["indeterminate"] += 1
            elif isinstance(exc, Unavailable):
                self.stats["unavailable"] += 1
            raise
        return results

    async def close(self) -> None:
        self._closed = True
        lanes, self._lanes = self._lanes, {}
        for lane in lanes.values():
            queued, lane.queue = lane.queue, []
            for op in queued:
                self._finish(op, error=Unavailable("the Redis backend was closed"))
        await self._tasks.aclose()

    # -- deadlines ---------------------------------------------------------------------
    def _expire(self, op: Op) -> None:
        """The deadline passed: the caller is told whether the op may have run."""
        op.timer = None
        fut = op.future
        if fut is None or fut.done():
            return
        timeout = self.options.command_timeout
        if op.state == QUEUED:
            op.state = ABANDONED
            # never written: no connection, or held behind a pipeline Redis did not answer
            fut.set_exception(
                Unavailable(
                    f"not sent to Redis within {timeout:g} s; the operation was not applied"
                )
            )
        else:
            fut.set_exception(
                Indeterminate(
                    f"no reply from Redis within {timeout:g} s; the operation may have been applied"
                )
            )

    # -- lanes -------------------------------------------------------------------------
    def _enqueue(self, ops: Sequence[Op]) -> None:
        topology, lanes = self.topology, self._lanes
        unroutable: list[Op] = []
        for op in ops:
            try:
                node = op.node or topology.node_for(op.route)
            except Exception:  # slot not covered, cluster being reconfigured
                unroutable.append(op)
                continue
            lane = lanes.get(node)
            if lane is None:
                lane = lanes[node] = _Lane()
            lane.queue.append(op)
            if not lane.active:
                lane.active = True
                self._tasks.spawn(self._pump(node, lane), name="uwsx-redis-lane")
        if unroutable:
            self._start(unroutable)

    def _take(self, lane: _Lane) -> list[Op]:
        """The next pipeline of a lane: its oldest ``max_batch`` live ops. What is beyond
        stays queued for the following pipeline, never on another connection: a pipeline
        written elsewhere could reach the server before the one ahead of it."""
        limit = self.options.max_batch
        batch: list[Op] = []
        while lane.queue and len(batch) < limit:
            room = limit - len(batch)
            head, lane.queue = lane.queue[:room], lane.queue[room:]
            for op in head:
                if op.state == ABANDONED:
                    self._finish(op, error=Unavailable("abandoned by its caller before sending"))
                else:
                    batch.append(op)
        return batch

    async def _pump(self, node: Node, lane: _Lane) -> None:
        """Send a lane's ops: what this tick issued now, then what came while it was out."""
        batch: list[Op] = []
        try:
            while True:
                batch = self._take(lane)
                if not batch:
                    break
                lane.sending = True
                await round_trip(self, node, batch)
                lane.sending = False
                self.stats["batches"] += 1
                retry, plan = self._decide(batch)
                batch = []
                if retry:
                    # Resent before the next pipeline leaves: the ops queued behind them were
                    # issued later and must not overtake them (a message published after
                    # another one must not arrive first because the first met TRYAGAIN).
                    await self._execute(retry, plan)
                # The callers just answered run now; what they issue joins the next pipeline.
                await asyncio.sleep(0)
        except BaseException as exc:
            self._interrupted(batch, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            lane.sending = lane.active = False
            if not lane.queue:
                if self._lanes.get(node) is lane:
                    del self._lanes[node]
            elif not self._closed:
                lane.active = True
                self._tasks.spawn(self._pump(node, lane), name="uwsx-redis-lane")

    # -- one-off batches and resends ---------------------------------------------------
    def _start(self, ops: list[Op], plan: Plan | None = None) -> None:
        """Send ``ops`` in a task of their own (``plan``: they are being resent)."""
        if self._closed:
            for op in ops:
                self._finish(op, error=Unavailable("the Redis backend was closed"))
            return
        self._tasks.spawn(self._execute(ops, plan), name="uwsx-redis-batch")

    async def _execute(self, ops: list[Op], plan: Plan | None = None) -> None:
        pending = []
        for op in ops:
            if op.state == ABANDONED:
                self._finish(op, error=Unavailable("abandoned by its caller before sending"))
            else:
                pending.append(op)
        try:
            if plan is not None:
                pending = await self._again(pending, plan)
            while pending:
                pending = await self._round(pending)
        except BaseException as exc:
            self._interrupted(pending, exc)
            if not isinstance(exc, Exception):
                raise

    def _interrupted(self, ops: list[Op], exc: BaseException) -> None:
        for op in ops:
            if op.state == DONE:
                continue
            kind = Indeterminate if op.state == SENT else Unavailable
            self._finish(op, error=kind(f"interrupted: {describe(exc)}"))

    async def _round(self, ops: list[Op]) -> list[Op]:
        groups: dict[Node, list[Op]] = {}
        for op in ops:
            op.replies = op.unsent = op.lost = None
            try:
                node = op.asking or op.node or self.topology.node_for(op.route)
            except Exception as exc:  # slot not covered, cluster being reconfigured
                op.unsent = exc
                continue
            groups.setdefault(node, []).append(op)
        if len(groups) == 1:
            [(node, group)] = groups.items()
            await round_trip(self, node, group)
        else:
            await asyncio.gather(*(round_trip(self, n, g) for n, g in groups.items()))
        self.stats["batches"] += 1
        retry, plan = self._decide(ops)
        return await self._again(retry, plan) if retry else []

    async def _pause(self, ops: list[Op]) -> None:
        worst = max(op.redirects + op.connect_failures for op in ops)
        delay = min(0.5, 0.01 * (2**worst)) * (0.5 + _runtime.current().random.random())
        await _runtime.current().clock.sleep(delay)

    async def load_scripts(self, node: Node, scripts: Sequence[Script]) -> None:
        """``SCRIPT LOAD`` on one node (connect time, and after ``NOSCRIPT``)."""
        await load_scripts(self, node, scripts)
