"""The command executor: auto-pipelining, one round trip per batch, and honest errors.

Every port operation becomes one :class:`Op` (one or a few commands that must run back to back
on one connection, e.g. a script call followed by ``WAIT``). Ops submitted during one
event-loop tick, from any number of tasks, are sent as one pipeline per server: a single
operation is flushed at the end of the tick it was issued in, so batching adds no latency.

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
import contextlib
import math
from collections.abc import Sequence
from typing import Any

from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from uwsx import _runtime
from uwsx.errors import BackendError, Indeterminate, Unavailable
from uwsx_redis._driver import DriverOptions, Node, Topology
from uwsx_redis._driver_op import ABANDONED, DONE, QUEUED, SENT, Op, script_op
from uwsx_redis._scripts import Script

__all__ = ["Executor", "Op", "script_op"]

_MAX_REDIRECTS = 12
_RETRYABLE = (TryAgainError, BusyLoadingError, ReadOnlyError, ClusterDownError)


def _protocol_error(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and "protocol error" in str(reply).lower()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


class Executor:
    """Sends ops to the topology, batching per tick; see the module docstring."""

    def __init__(self, topology: Topology, options: DriverOptions) -> None:
        self.topology = topology
        self.options = options
        self._queue: list[Op] = []
        self._scheduled = False
        self._closed = False
        self._tasks = _runtime.current().task_group("uwsx-redis-exec")
        #: counters for diagnostics and metrics
        self.stats: dict[str, int] = {
            "ops": 0,
            "batches": 0,
            "round_trips": 0,
            "resent": 0,
            "indeterminate": 0,
            "unavailable": 0,
        }

    # -- public ------------------------------------------------------------------------
    async def run(self, op: Op) -> list[Any]:
        """Send one op and return its replies (one per command)."""
        return (await self.run_all([op]))[0]

    async def run_all(self, ops: Sequence[Op]) -> list[list[Any]]:
        """Send several ops in the same round trip; replies in order."""
        if self._closed:
            raise Unavailable("the Redis backend is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.command_timeout
        for op in ops:
            # A blocking command (WAIT) may take its own timeout on top of the deadline.
            op.deadline = deadline + (op.read_timeout or 0.0)
            op.future = loop.create_future()
        self.stats["ops"] += len(ops)
        if self.options.auto_pipeline and not any(op.read_timeout for op in ops):
            self._enqueue(list(ops))
        else:
            self._tasks.spawn(self._execute(list(ops)), name="uwsx-redis-batch")
        results: list[list[Any]] = []
        for index, op in enumerate(ops):
            try:
                results.append(await self._wait(op))
            except BaseException as exc:
                for rest in ops[index + 1 :]:
                    self._abandon(rest)
                if isinstance(exc, Indeterminate):
                    self.stats["indeterminate"] += 1
                elif isinstance(exc, Unavailable):
                    self.stats["unavailable"] += 1
                raise
        return results

    async def close(self) -> None:
        self._closed = True
        queued, self._queue = self._queue, []
        for op in queued:
            self._finish(op, error=Unavailable("the Redis backend was closed"))
        await self._tasks.aclose()

    # -- batching ----------------------------------------------------------------------
    def _enqueue(self, ops: list[Op]) -> None:
        self._queue.extend(ops)
        if len(self._queue) >= self.options.max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._queue = self._queue, []
        if batch and not self._closed:
            self._tasks.spawn(self._execute(batch), name="uwsx-redis-batch")

    async def _wait(self, op: Op) -> list[Any]:
        assert op.future is not None
        loop = asyncio.get_running_loop()
        try:
            done, _ = await asyncio.wait({op.future}, timeout=max(0.0, op.deadline - loop.time()))
        except asyncio.CancelledError:
            self._abandon(op)
            raise
        if not done:
            self._abandon(op)
            if op.state == ABANDONED:
                raise Unavailable(
                    f"no Redis connection within {self.options.command_timeout:g} s; "
                    "the operation was not sent"
                )
            raise Indeterminate(
                f"no reply from Redis within {self.options.command_timeout:g} s; "
                "the operation may have been applied"
            )
        return op.future.result()

    @staticmethod
    def _abandon(op: Op) -> None:
        if op.state == QUEUED:
            op.state = ABANDONED
        if op.future is not None:
            # The caller is gone: consume a late error so asyncio does not log it.
            op.future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _finish(
        self, op: Op, *, replies: list[Any] | None = None, error: BaseException | None = None
    ) -> None:
        op.state = DONE
        fut = op.future
        if fut is None or fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(replies or [])

    # -- execution ---------------------------------------------------------------------
    async def _execute(self, ops: list[Op]) -> None:
        pending = [op for op in ops if op.state != ABANDONED]
        try:
            while pending:
                pending = await self._round(pending)
        except BaseException as exc:
            for op in pending:
                if op.state == SENT:
                    self._finish(op, error=Indeterminate(f"interrupted: {_describe(exc)}"))
                else:
                    self._finish(op, error=Unavailable(f"interrupted: {_describe(exc)}"))
            if not isinstance(exc, Exception):
                raise

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
        await asyncio.gather(*(self._send(node, group) for node, group in groups.items()))
        self.stats["batches"] += 1
        return await self._judge(ops, groups)

    async def _send(self, node: Node, ops: list[Op]) -> None:
        """One round trip: write every command of ``ops``, then read every reply."""
        try:
            conn = await node.acquire()
        except Exception as exc:
            for op in ops:
                op.unsent = exc
            return
        # A caller that gave up while the connection was being had was told "not sent".
        ops = [op for op in ops if op.state != ABANDONED]
        clean = False
        try:
            if not ops:
                clean = True
                return
            commands = [cmd for op in ops for cmd in op.wire()]
            for op in ops:
                op.state = SENT
            self.stats["round_trips"] += 1
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            for op in ops:
                replies = [await self._read(conn, op) for _ in op.wire()]
                op.replies = replies[1:] if op.asking is not None else replies
            # After a protocol error the server closes the connection: do not reuse it.
            clean = not any(_protocol_error(r) for op in ops for r in op.replies or ())
        except Exception as exc:
            for op in ops:
                if op.replies is None:
                    op.lost = exc
        finally:
            if not clean:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            await node.release(conn)

    async def _read(self, conn: Any, op: Op) -> Any:
        try:
            if op.read_timeout is None:
                return await conn.read_response(disable_decoding=True)
            async with asyncio.timeout(op.read_timeout + self.options.socket_timeout):
                return await conn.read_response(disable_decoding=True, timeout=math.inf)
        except (ResponseError, BusyLoadingError) as exc:
            return exc

    async def _judge(self, ops: list[Op], groups: dict[Node, list[Op]]) -> list[Op]:
        """Finish what is decided; return the ops to send again (after a pause/refresh)."""
        retry: list[Op] = []
        refresh = pause = False
        loads: dict[Node, dict[str, Script]] = {}
        node_of = {id(op): node for node, group in groups.items() for op in group}
        for op in ops:
            if op.state == ABANDONED:
                self._finish(op, error=Unavailable("abandoned by its caller before sending"))
                continue
            if op.lost is not None:
                kind = Unavailable if op.readonly else Indeterminate
                what = "" if op.readonly else "; the operation may have been applied"
                self._finish(op, error=kind(f"Redis connection lost: {_describe(op.lost)}{what}"))
                continue
            if op.unsent is not None:
                op.connect_failures += 1
                if op.connect_failures >= self.options.connect_attempts:
                    self._finish(
                        op, error=Unavailable(f"Redis unreachable: {_describe(op.unsent)}")
                    )
                else:
                    refresh = pause = True
                    retry.append(op)
                continue
            assert op.replies is not None
            verdict = self._verdict(op, node_of[id(op)], loads)
            if verdict == "done":
                continue
            op.redirects += 1
            if op.redirects > _MAX_REDIRECTS:
                self._finish(op, error=Unavailable(f"Redis kept redirecting: {op.error}"))
                continue
            refresh = refresh or verdict in ("refresh", "pause")
            pause = pause or verdict == "pause"
            retry.append(op)
        if not retry:
            return []
        self.stats["resent"] += len(retry)
        for node, scripts in loads.items():
            await self._load(node, list(scripts.values()))
        if refresh and self.topology.cluster:
            with contextlib.suppress(Exception):
                await self.topology.refresh()
        if pause:
            await self._pause(retry)
        loop_now = asyncio.get_running_loop().time()
        alive = []
        for op in retry:
            if op.deadline <= loop_now or op.state == ABANDONED:
                self._finish(op, error=Unavailable(f"Redis not ready in time: {op.error}"))
            else:
                op.state = QUEUED
                alive.append(op)
        return alive

    def _verdict(self, op: Op, node: Node, loads: dict[Node, dict[str, Script]]) -> str:
        assert op.replies is not None
        op.asking = None
        for index, reply in enumerate(op.replies):
            if not isinstance(reply, BaseException):
                continue
            op.error = reply
            if isinstance(reply, NoScriptError) and index in op.scripts:
                script = op.scripts[index]
                loads.setdefault(node, {})[script.sha] = script
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
            self._finish(op, error=BackendError(f"Redis error: {_describe(reply)}"))
            return "done"
        self._finish(op, replies=op.replies)
        return "done"

    async def _pause(self, ops: list[Op]) -> None:
        worst = max(op.redirects + op.connect_failures for op in ops)
        delay = min(0.5, 0.01 * (2**worst)) * (0.5 + _runtime.current().random.random())
        await _runtime.current().clock.sleep(delay)

    async def _load(self, node: Node, scripts: list[Script]) -> None:
        """SCRIPT LOAD on one node (errors surface as the resent call failing again)."""
        with contextlib.suppress(Exception):
            await self.load_scripts(node, scripts)

    async def load_scripts(self, node: Node, scripts: Sequence[Script]) -> None:
        if not scripts:
            return
        conn = await node.acquire()
        clean = False
        try:
            self.stats["round_trips"] += 1
            cmds = [("SCRIPT", "LOAD", s.source) for s in scripts]
            await conn.send_packed_command(conn.pack_commands(cmds), check_health=False)
            for _ in cmds:
                await conn.read_response(disable_decoding=True)
            clean = True
        finally:
            if not clean:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            await node.release(conn)
