"""The only place in uwsx that touches wall time, OS randomness, ids and task spawning.

Features and backends call :func:`current` and use the returned :class:`Runtime`. Production
gets :data:`REAL`; the simulator installs a per-instance runtime with :func:`use` (a context
variable, so every task spawned inside inherits it) whose clock is virtual, skewed and drifting
and whose ids and randomness come from the run's seed.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from uwsx._runtime.clock import Clock, RealClock
from uwsx._runtime.ids import Ids, RandomSource, RealIds, SeededIds, SeededRandom, SystemRandom
from uwsx._runtime.tasks import TaskGroup

__all__ = [
    "REAL",
    "Clock",
    "Ids",
    "RandomSource",
    "RealClock",
    "RealIds",
    "Runtime",
    "SeededIds",
    "SeededRandom",
    "SystemRandom",
    "TaskGroup",
    "buggify",
    "current",
    "use",
]


class Runtime:
    """Clock, id factory, randomness and task groups for one uwsx instance."""

    __slots__ = ("buggify_sites", "clock", "ids", "name", "random")

    def __init__(
        self,
        *,
        clock: Clock,
        ids: Ids,
        random: RandomSource,
        name: str = "real",
        buggify_sites: frozenset[str] | None = None,
    ) -> None:
        self.clock = clock
        self.ids = ids
        self.random = random
        self.name = name
        #: ``None`` disables BUGGIFY entirely (production); otherwise the sites active this run.
        self.buggify_sites = buggify_sites

    def task_group(self, owner: str) -> TaskGroup:
        """A new group of background tasks owned by one feature object."""
        return TaskGroup(owner)


REAL = Runtime(clock=RealClock(), ids=RealIds(), random=SystemRandom())

_CURRENT: contextvars.ContextVar[Runtime] = contextvars.ContextVar("uwsx_runtime", default=REAL)


def current() -> Runtime:
    """The runtime of the calling context (the real one unless a simulator installed one)."""
    return _CURRENT.get()


@contextlib.contextmanager
def use(runtime: Runtime) -> Iterator[Runtime]:
    """Install ``runtime`` for the current context and every task spawned inside it."""
    token = _CURRENT.set(runtime)
    try:
        yield runtime
    finally:
        _CURRENT.reset(token)


def buggify(site: str) -> bool:
    """True when the simulator wants this site to misbehave now (FoundationDB's BUGGIFY).

    Always False in production. In a simulation each site is enabled for a whole run with
    probability 1/4 and then fires with probability 1/4 each time it is reached.
    """
    rt = _CURRENT.get()
    sites = rt.buggify_sites
    if sites is None or site not in sites:
        return False
    return rt.random.random() < 0.25
