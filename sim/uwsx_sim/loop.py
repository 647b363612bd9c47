"""The simulation kernel: a seeded, virtual-time asyncio event loop.

:class:`SimLoop` is an :class:`asyncio.BaseEventLoop` whose clock is an integer count of virtual
nanoseconds starting at 0. It has no selector and no file descriptors: when nothing is ready it
jumps straight to the next timer, so a 10-minute scenario costs only the callbacks it runs.

Guarantees:

* **Determinism.** Given the same seed and the same program, the order in which callbacks run is
  identical in every process: each iteration's ready batch is shuffled with a seeded RNG (trio's
  batch shuffle), which explores interleavings a FIFO loop never produces, and nothing on a
  decision path depends on ``id()`` or hash order.
* **Deadlock detection.** Nothing ready, nothing scheduled and the loop not stopping means no
  task can ever make progress: :class:`Deadlock` is raised out of ``run_until_complete``.
* **Per-instance guard.** Every callback runs in a :mod:`contextvars` context; the context's
  :data:`NODE` tag (a :class:`NodeRef`, inherited by every task an instance spawns) decides
  whether it runs: a *dead* incarnation's callbacks are dropped (a crash runs no more of its
  code), a *paused* one's are parked until it resumes (a GC pause).
* **No threads.** ``run_in_executor`` and cross-thread ``call_soon_threadsafe`` raise
  :class:`SimViolation`; unhandled callback errors are collected in :attr:`SimLoop.errors`.

This file holds every use of CPython's private loop internals (``_run_once``, ``_ready``,
``_scheduled``, ``Handle._context``); it is tested on each supported Python.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import math
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, ClassVar, TypeVar, cast

from uwsx_sim.clock import Rng

__all__ = ["NODE", "Deadlock", "NodeRef", "SimLoop", "SimViolation", "current_node"]

_T = TypeVar("_T")

RUNNING, PAUSED, DEAD = "running", "paused", "dead"


class SimViolation(RuntimeError):
    """The code under simulation did something the simulator forbids (threads, executors)."""


class Deadlock(RuntimeError):
    """No callback is ready or scheduled while the main task still waits: nothing can progress."""


class NodeRef:
    """One incarnation of one simulated instance; tasks carry it in :data:`NODE`."""

    __slots__ = ("context", "incarnation", "node", "parked", "state", "tasks")

    def __init__(self, node: str, incarnation: int) -> None:
        self.node = node
        self.incarnation = incarnation
        self.state = RUNNING
        #: callbacks that became ready while paused, run again in order on resume
        self.parked: list[asyncio.Handle] = []
        #: live tasks of this incarnation (kept so a crash can dispose of them deliberately)
        self.tasks: dict[asyncio.Task[Any], None] = {}
        self.context: contextvars.Context | None = None

    @property
    def alive(self) -> bool:
        return self.state != DEAD

    def __repr__(self) -> str:
        return f"<NodeRef {self.node}#{self.incarnation} {self.state}>"


#: The instance a callback belongs to (``None``: the world, the network, the backend).
NODE: contextvars.ContextVar[NodeRef | None] = contextvars.ContextVar("uwsx_sim_node", default=None)


def current_node() -> NodeRef | None:
    return NODE.get()


class SimLoop(asyncio.BaseEventLoop):
    """A seeded virtual-time event loop (see the module docstring).

    :param seed: seeds the ready-queue shuffle (the ``sched`` stream).
    :param shuffle: False keeps asyncio's FIFO order (for debugging a schedule).
    """

    # CPython internals of BaseEventLoop that this kernel drives (absent from typeshed).
    _ready: deque[Any]
    _scheduled: list[Any]
    _stopping: bool
    _timer_cancelled_count: int
    _check_closed: Callable[[], None]

    #: Hard cap on virtual time, a guard against a runaway timer chain (one virtual year).
    MAX_TIME: ClassVar[float] = 365 * 86400.0

    def __init__(self, seed: int = 0, *, shuffle: bool = True) -> None:
        super().__init__()
        self._ticks = 0
        self._now = 0.0
        #: the timer heap (BaseEventLoop's ``_scheduled`` stays empty)
        self._timers: list[tuple[float, int, Any]] = []
        self._serial = 0
        self._clock_resolution = 1e-9
        self._rng = Rng.stream(seed, "sched")
        self._shuffle = shuffle
        self._owner_thread = threading.get_ident()
        self.seed = seed
        #: handles run so far (the benchmark's "loop handles")
        self.handles_run = 0
        #: unhandled errors reported to the exception handler; a run with any is a failure
        self.errors: list[dict[str, Any]] = []
        self.set_exception_handler(_record_error)
        self.set_task_factory(cast(Any, _tag_task))

    @classmethod
    def factory(cls, seed: int = 0, *, shuffle: bool = True) -> Callable[[], SimLoop]:
        """A zero-argument loop factory for ``asyncio.Runner`` and pytest-asyncio."""

        def make() -> SimLoop:
            return cls(seed, shuffle=shuffle)

        return make

    # -- time --------------------------------------------------------------------
    def time(self) -> float:
        return self._now

    @property
    def ticks(self) -> int:
        """Virtual nanoseconds since the loop was created."""
        return self._ticks

    def _advance_to(self, when: float) -> None:
        if when > self.MAX_TIME:
            raise Deadlock(f"virtual time would pass {self.MAX_TIME:g}s: a runaway timer chain")
        ticks = math.ceil(when * 1e9)
        if ticks > self._ticks:
            self._ticks = ticks
            self._now = ticks / 1e9

    # -- the iteration -------------------------------------------------------------
    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """Schedule ``callback`` at virtual time ``when``. Timers live in a heap of
        ``(when, serial, handle)`` tuples: compared in C, ties broken by creation order."""
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()
        timer = asyncio.TimerHandle(when, callback, args, self, context)
        self._serial += 1
        heapq.heappush(self._timers, (when, self._serial, timer))
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    def _run_once(self) -> None:
        timers = self._timers
        ready = self._ready
        if timers:
            while timers and timers[0][2]._cancelled:
                self._timer_cancelled_count -= 1
                heapq.heappop(timers)[2]._scheduled = False
            cancelled = self._timer_cancelled_count
            if cancelled > 64 and cancelled * 2 > len(timers):
                self._compact()
                timers = self._timers
        if not ready:
            if self._stopping:
                return
            if not timers:
                raise Deadlock(f"nothing ready or scheduled at t={self._now:.9f}s")
            when = timers[0][0]
            if when > self._now:
                self._advance_to(when)
        if timers:
            end_time = self._now + 1e-9
            pop = heapq.heappop
            while timers and timers[0][0] < end_time:
                handle = pop(timers)[2]
                handle._scheduled = False
                ready.append(handle)
        ntodo = len(ready)
        self.handles_run += ntodo
        if ntodo == 1:
            handle = ready.popleft()
            if not handle._cancelled:
                ref = handle._context.get(NODE)
                if ref is None or ref.state is RUNNING:
                    handle._run()
                elif ref.state is PAUSED:
                    ref.parked.append(handle)
            return
        if self._shuffle:
            batch = list(ready)
            self._rng.shuffle(batch)
            ready.clear()
            ready.extend(batch)
        for _ in range(ntodo):
            handle = ready.popleft()
            if handle._cancelled:
                continue
            ref = handle._context.get(NODE)
            if ref is not None and ref.state is not RUNNING:
                if ref.state is PAUSED:
                    ref.parked.append(handle)
                continue
            handle._run()

    def _compact(self) -> None:
        """Drop cancelled timers once they are most of the heap."""
        live = []
        for entry in self._timers:
            if entry[2]._cancelled:
                entry[2]._scheduled = False
            else:
                live.append(entry)
        heapq.heapify(live)
        self._timers = live
        self._timer_cancelled_count = 0

    # -- instance control -------------------------------------------------------------
    def pause(self, ref: NodeRef) -> None:
        """Park every callback of ``ref`` until :meth:`resume` (timers keep expiring)."""
        if ref.state is RUNNING:
            ref.state = PAUSED

    def resume(self, ref: NodeRef) -> None:
        if ref.state is PAUSED:
            ref.state = RUNNING
            parked, ref.parked = ref.parked, []
            self._ready.extend(parked)

    def kill(self, ref: NodeRef) -> None:
        """Mark ``ref`` dead: none of its callbacks runs again. Its tasks stay referenced (in
        ``ref.tasks``) until :meth:`bury` disposes of them."""
        ref.state = DEAD
        ref.parked.clear()
        for task in ref.tasks:
            task._log_destroy_pending = False  # type: ignore[attr-defined]

    def bury(self, ref: NodeRef) -> None:
        """Close the coroutines of a dead incarnation's tasks, inside the loop, so their
        ``finally`` blocks never run later from the garbage collector (outside any loop)."""
        assert ref.state is DEAD
        tasks, ref.tasks = list(ref.tasks), {}
        for task in tasks:
            coro = task.get_coro()
            if not isinstance(coro, Coroutine):
                continue
            try:
                if ref.context is not None:
                    ref.context.run(coro.close)
                else:
                    coro.close()
            except BaseException:
                pass
            # The coroutine is finished; mark the task done (cancelled) so nothing waits on it.
            asyncio.Future.cancel(task)

    def close(self) -> None:
        self._timers.clear()
        super().close()

    # -- forbidden -----------------------------------------------------------------
    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        raise SimViolation(f"run_in_executor({func!r}) under simulation: threads are forbidden")

    def call_soon_threadsafe(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if threading.get_ident() != self._owner_thread:
            raise SimViolation("call_soon_threadsafe from another thread under simulation")
        return self.call_soon(callback, *args, context=context)

    def _write_to_self(self) -> None:
        """No self-pipe: nothing outside the loop's thread may wake it."""

    def _process_events(self, event_list: list[Any]) -> None:
        """No file descriptors, no events."""


def _tag_task(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    **kwargs: Any,
) -> asyncio.Task[Any]:
    """Create a task and register it with the incarnation that owns its context."""
    task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
    context = kwargs.get("context")
    ref = context.get(NODE) if context is not None else NODE.get()
    if ref is not None:
        if ref.state is DEAD:
            task._log_destroy_pending = False  # type: ignore[attr-defined]
        ref.tasks[task] = None
        task.add_done_callback(ref.tasks.pop)
    return task


def _record_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    assert isinstance(loop, SimLoop)
    task = context.get("task") or context.get("future")
    if isinstance(task, asyncio.Task) and "destroyed but it is pending" in str(
        context.get("message", "")
    ):
        return  # a crashed instance's task; kill() already disowned it
    loop.errors.append(context)
