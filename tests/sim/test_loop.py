"""The kernel: virtual time, seeded shuffle, deadlock detection, instance guard, no threads."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from uwsx_sim.loop import NODE, Deadlock, NodeRef, SimLoop, SimViolation


def run(coro_fn, seed: int = 1):  # type: ignore[no-untyped-def]
    with asyncio.Runner(loop_factory=SimLoop.factory(seed)) as runner:
        return runner.run(coro_fn())


async def test_sleep_jumps_virtual_time() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, SimLoop)
    start = loop.time()
    await asyncio.sleep(3600)
    assert loop.time() - start == pytest.approx(3600, abs=1e-6)
    assert loop.ticks >= 3600 * 10**9


def interleaving(seed: int) -> list[int]:
    async def main() -> list[int]:
        order: list[int] = []

        async def worker(i: int) -> None:
            for _ in range(3):
                await asyncio.sleep(0)
                order.append(i)

        await asyncio.gather(*(worker(i) for i in range(8)))
        return order

    result: list[int] = run(main, seed)
    return result


def test_same_seed_same_interleaving_other_seed_differs() -> None:
    assert interleaving(3) == interleaving(3)
    assert any(interleaving(3) != interleaving(s) for s in (4, 5, 6))


def test_fifo_without_shuffle() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        order: list[int] = []
        for i in range(5):
            loop.call_soon(order.append, i)
        await asyncio.sleep(0.001)
        return order

    with asyncio.Runner(loop_factory=SimLoop.factory(1, shuffle=False)) as runner:
        assert runner.run(main()) == [0, 1, 2, 3, 4]


def test_waiting_forever_is_a_deadlock() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(Deadlock):
        run(main)


def test_timers_fire_in_time_order() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        seen: list[float] = []
        for delay in (0.3, 0.1, 0.2):
            loop.call_later(delay, lambda: seen.append(loop.time()))
        await asyncio.sleep(1)
        return seen

    seen = run(main)
    assert seen == sorted(seen)
    assert seen[0] == pytest.approx(0.1)


def _spawn_on(ref: NodeRef, coro):  # type: ignore[no-untyped-def]
    ctx = contextvars.copy_context()
    ctx.run(NODE.set, ref)
    ref.context = ctx
    return asyncio.get_running_loop().create_task(coro, context=ctx)


async def test_paused_instance_stops_and_resumes_later() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, SimLoop)
    ref = NodeRef("n1", 1)
    ticks: list[float] = []

    async def beat() -> None:
        while True:
            await asyncio.sleep(1)
            ticks.append(loop.time())

    task = _spawn_on(ref, beat())
    await asyncio.sleep(2.5)
    loop.pause(ref)
    await asyncio.sleep(5)
    assert all(t < 2.6 for t in ticks)
    loop.resume(ref)
    await asyncio.sleep(0.01)
    assert ticks[-1] == pytest.approx(7.5, abs=0.02)  # the late timer fired on resume
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_dead_instance_runs_nothing_and_bury_runs_finally() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, SimLoop)
    ref = NodeRef("n1", 1)
    events: list[str] = []

    async def work() -> None:
        try:
            while True:
                await asyncio.sleep(1)
                events.append("tick")
        finally:
            events.append("finally")

    task = _spawn_on(ref, work())
    await asyncio.sleep(1.5)
    loop.kill(ref)
    await asyncio.sleep(10)
    assert events == ["tick"]
    loop.bury(ref)
    assert events == ["tick", "finally"]
    assert task.cancelled()


async def test_threads_are_forbidden() -> None:
    with pytest.raises(SimViolation):
        await asyncio.to_thread(print)


async def test_unretrieved_task_exception_is_recorded() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, SimLoop)

    async def boom() -> None:
        raise ValueError("boom")

    task = loop.create_task(boom())
    await asyncio.sleep(0.1)
    loop.call_exception_handler({"message": "probe", "task": task})
    assert any(e.get("message") == "probe" for e in loop.errors)
    assert isinstance(task.exception(), ValueError)
