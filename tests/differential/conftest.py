"""The differential driver: run one op sequence on the memory backend and on a real server in
lockstep and fail at the first result that differs.

Each Hypothesis example opens both backends with a fresh ``key_prefix`` (unique per test run
and example), so examples never see each other's keys, logs, locks, jobs or tasks, and closes
them afterwards. After the generated ops, a fixed *snapshot* of reads runs on both so a
difference in state that no generated op happened to read still shows. The memory backend uses
one named store per test; the real server is a session deployment from ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import uwsx
from tests.differential.ops import Op, Session
from uwsx.ports.backend import Backend

__all__ = ["SETTINGS", "Differential", "execute", "fuzz"]

#: Deterministic in CI: derandomised, no example database, no deadline (servers are slow to
#: warm up). Example counts are set per test to keep the directory well under a minute.
SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_RUN = uuid.uuid4().hex[:6]
_serial = itertools.count()


async def execute(backend: Backend, op: Op, session: Session) -> Any:
    """Run ``op`` on ``backend``; the normalised result or ``("raise", <class name>)``."""
    try:
        port: Any = getattr(backend, op.port)
        if op.space is not None:
            port = port.space(session.resolve(op.space))
        method = getattr(port, op.method)
        args = session.resolve(op.args)
        kwargs = {k: session.resolve(v) for k, v in op.kwargs}
        result = await method(*args, **kwargs)
    except Exception as exc:  # the error class is part of the compared behaviour
        return ("raise", type(exc).__name__)
    return session.normalize(op, result)


class Differential:
    """Compares a real backend (``real_url``) with the memory model, one example at a time."""

    def __init__(self, real_url: str, label: str) -> None:
        self.real_url = real_url
        self.memory_url = f"memory://diff-{_RUN}-{label}-{next(_serial)}"
        self._runner = asyncio.Runner()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from uwsx.memory import drop_store

        self._runner.close()
        drop_store(self.memory_url.removeprefix("memory://"))

    def check(self, ops: Sequence[Op], snapshot: Sequence[Op] = ()) -> None:
        """Run ``ops`` then ``snapshot`` on both backends; AssertionError at the first
        difference, naming the op and both results."""
        self._runner.run(self._check([*ops], [*snapshot]))

    async def _check(self, ops: list[Op], snapshot: list[Op]) -> None:
        prefix = f"dx_{_RUN}_{next(_serial)}:"
        model = await uwsx.connect(self.memory_url, key_prefix=prefix)
        try:
            real = await uwsx.connect(self.real_url, key_prefix=prefix)
            try:
                await self._lockstep(model, real, ops, snapshot)
            finally:
                await real.close()
        finally:
            await model.close()

    @staticmethod
    async def _lockstep(model: Backend, real: Backend, ops: list[Op], snapshot: list[Op]) -> None:
        on_model, on_real = Session(), Session()
        trace: list[str] = []
        for i, op in enumerate([*ops, *snapshot]):
            expected = await execute(model, op, on_model)
            got = await execute(real, op, on_real)
            where = "op" if i < len(ops) else "snapshot op"
            trace.append(f"  {i:2d} {op!r} -> {expected!r}")
            if expected != got:
                raise AssertionError(
                    f"{real.name} differs from memory at {where} {i}: {op!r}\n"
                    f"  memory: {expected!r}\n  {real.name}: {got!r}\n"
                    "sequence (memory results):\n" + "\n".join(trace)
                )


def fuzz(url: str, label: str, strategy: Any, snapshot: list[Op], *, examples: int) -> None:
    """Hypothesis over sequences of 8 to 30 ops from ``strategy`` (one Runner per test).

    The lower bound matters: unbounded Hypothesis lists average about three elements, too few
    to reach multi-step states such as "claimed, then completed with a foreign token"."""
    with Differential(url, label) as diff:

        @settings(SETTINGS, max_examples=examples)
        @given(seq=st.lists(strategy, min_size=8, max_size=30))
        def run(seq: list[Op]) -> None:
            diff.check(seq, snapshot)

        run()
