"""One round trip on one connection: write every command of a batch, then read every reply.

Nothing here decides what a reply means (:mod:`uwsx_redis._driver_judge` does); a failure is
recorded on each op as *unsent* (no connection could be had: nothing was written) or *lost*
(the connection broke or timed out after the write: the ops may have run).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import BusyLoadingError, ResponseError

from uwsx.errors import BackendError
from uwsx_redis._driver import Node
from uwsx_redis._driver_op import ABANDONED, SENT, Op
from uwsx_redis._scripts import Script

if TYPE_CHECKING:
    from uwsx_redis._driver_judge import Judge

__all__ = ["load_scripts", "round_trip"]


#: Arguments at least this long are written as chunks of their own instead of being copied
#: into the request (redis-py's ``buffer_cutoff``).
_CUTOFF = 6000


def pack(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """The RESP request for ``commands``, byte for byte what ``conn.pack_commands`` builds,
    about three times faster for the argument types the adapter sends (``str``, ``bytes``,
    ``int``); anything else is left to redis-py."""
    chunks: list[bytes] = []
    small: list[bytes] = []
    for cmd in commands:
        if type(cmd[0]) is not str or " " in cmd[0]:  # redis-py splits "CONFIG GET"
            packed: list[bytes] = conn.pack_commands(commands)
            return packed
        small.append(b"*%d\r\n" % len(cmd))
        for arg in cmd:
            kind = type(arg)
            if kind is str:
                data = arg.encode()
            elif kind is int:
                data = b"%d" % arg
            elif kind is bytes:
                data = arg
            else:
                packed = conn.pack_commands(commands)
                return packed
            if len(data) < _CUTOFF:
                small += (b"$%d\r\n" % len(data), data, b"\r\n")
            else:
                small.append(b"$%d\r\n" % len(data))
                chunks += (b"".join(small), data)
                small = [b"\r\n"]
    chunks.append(b"".join(small))
    return chunks


def _protocol_error(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and "protocol error" in str(reply).lower()


async def round_trip(ex: Judge, node: Node, ops: list[Op]) -> None:
    """Write the commands of ``ops`` to ``node`` as one pipeline and read their replies into
    ``op.replies``; on failure set ``op.unsent`` or ``op.lost`` instead."""
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
        try:
            packed = pack(conn, [cmd for op in ops for cmd in op.wire()])
        except Exception:
            # An argument Redis cannot take (a str that is not UTF-8, an int too long to
            # print): refuse the ops that carry one, before anything is written.
            ops, packed = _refuse_unpackable(ex, conn, ops)
        if not ops:
            clean = True
            return
        for op in ops:
            op.state = SENT
            op.sent_to = node
        ex.stats["round_trips"] += 1
        await _exchange(conn, packed, ops, ex.options.socket_timeout)
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


def _refuse_unpackable(ex: Judge, conn: Any, ops: list[Op]) -> tuple[list[Op], list[bytes]]:
    """Finish every op whose commands cannot be packed (nothing was sent); return the others
    and their request."""
    kept: list[Op] = []
    packed: list[bytes] = []
    for op in ops:
        try:
            chunks = pack(conn, op.wire())
        except Exception as exc:
            error = BackendError(f"the command cannot be sent to Redis: {exc}")
            error.__cause__ = exc
            ex._finish(op, error=error)
            continue
        kept.append(op)
        packed += chunks
    return kept, packed


class _Watchdog:
    """Ends a round trip (cancelling it through ``scope``) once the write or the wait for
    one reply has taken longer than ``allow`` seconds. One timer per round trip instead of
    one per reply: the timer only re-arms itself while replies keep coming."""

    __slots__ = ("allow", "handle", "last", "loop", "scope")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, scope: asyncio.Timeout, allow: float
    ) -> None:
        self.loop, self.scope, self.allow = loop, scope, allow
        #: when the current wait (the write, then each reply) began
        self.last = loop.time()
        self.handle: asyncio.TimerHandle | None = loop.call_at(self.last + allow, self._check)

    def _check(self) -> None:
        due = self.last + self.allow
        if self.loop.time() >= due:
            self.handle = None
            self.scope.reschedule(self.loop.time())
        else:
            self.handle = self.loop.call_at(due, self._check)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


async def _exchange(conn: Any, packed: list[bytes], ops: list[Op], timeout: float) -> None:
    """Send ``packed`` and read one reply per command of ``ops`` (an error reply is kept as
    the reply); the write and each reply may take ``timeout`` seconds (plus an op's
    ``read_timeout`` for its replies), else :class:`TimeoutError`.

    redis-py bounds a write with ``asyncio.wait_for``, which on Python 3.11 runs it in a task
    of its own (a task and a loop iteration per round trip), and each read with a timeout of
    its own; here one scope and one watchdog timer bound them all."""
    try:
        await _bounded(conn, packed, ops, timeout)
    except TimeoutError:
        raise TimeoutError(f"Redis did not answer within {timeout:g} s") from None


async def _bounded(conn: Any, packed: list[bytes], ops: list[Op], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as scope:
        dog = _Watchdog(loop, scope, timeout)
        try:
            saved = conn.socket_timeout
            conn.socket_timeout = None  # redis-py then writes and drains without wait_for
            try:
                await conn.send_packed_command(packed, check_health=False)
            finally:
                conn.socket_timeout = saved
            for op in ops:
                if op.read_timeout:
                    dog.allow = timeout + op.read_timeout
                replies = []
                for _ in op.wire():
                    dog.last = loop.time()
                    try:
                        reply = await conn.read_response(disable_decoding=True, timeout=math.inf)
                    except (ResponseError, BusyLoadingError) as exc:
                        reply = exc
                    replies.append(reply)
                op.replies = replies[1:] if op.asking is not None else replies
                dog.allow = timeout
        finally:
            dog.cancel()


async def load_scripts(ex: Judge, node: Node, scripts: Sequence[Script]) -> None:
    """``SCRIPT LOAD`` every script on ``node`` in one round trip."""
    if not scripts:
        return
    conn = await node.acquire()
    clean = False
    try:
        ex.stats["round_trips"] += 1
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
