"""``CircuitBreaker``: a three-state health latch shared by features.

healthy --(failure_threshold consecutive failures)--> broken --(reset_timeout)--> probing
probing --(the single probe succeeds)--> healthy;  probing --(probe fails)--> broken

While broken, :meth:`CircuitBreaker.guard` raises :class:`~uwsx.errors.CircuitBrokenError` so
awaited calls fail fast and fire-and-forget paths skip the backend. In probing exactly one caller
(the probe) gets through. Deliberate improvement over the original: a probe that never reports
back is released after another ``reset_timeout``, so the breaker cannot stay stuck in probing.

Time comes from the runtime clock (virtual under the simulator). The broken->probing transition
is driven by a timer task when an event loop runs, and checked lazily on every access otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from uwsx import _runtime
from uwsx.errors import CircuitBrokenError

__all__ = ["MAX_BREAKER_LISTENERS", "BreakerState", "CircuitBreaker", "with_breaker"]

log = logging.getLogger("uwsx.breaker")

BreakerState = Literal["healthy", "broken", "probing"]
Listener = Callable[[BreakerState, BreakerState], None]
MAX_BREAKER_LISTENERS = 10_000
_T = TypeVar("_T")


class CircuitBreaker:
    """Fail fast while a backend is down.

    :param failure_threshold: consecutive failures that break the circuit (integer >= 1).
    :param reset_timeout: seconds broken before a probe is allowed (>= 0).
    :param on_state_change: first listener, called ``(from_state, to_state)``.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        on_state_change: Listener | None = None,
    ) -> None:
        if (
            isinstance(failure_threshold, bool)
            or not isinstance(failure_threshold, int)
            or failure_threshold < 1
        ):
            raise ValueError("failure_threshold must be a positive integer")
        if (
            isinstance(reset_timeout, bool)
            or not isinstance(reset_timeout, int | float)
            or not math.isfinite(reset_timeout)
            or reset_timeout < 0
        ):
            raise ValueError("reset_timeout must be a non-negative number of seconds")
        self._threshold = failure_threshold
        self._reset_timeout = float(reset_timeout)
        self._clock = _runtime.current().clock
        self._state: BreakerState = "healthy"
        self._failures = 0
        self._broken_at = 0.0
        self._probe_free = False
        self._probe_taken_at = 0.0
        self._listeners: dict[int, Listener] = {}
        self._serial = 0
        self._timer: asyncio.Task[None] | None = None
        if on_state_change is not None:
            self.subscribe(on_state_change)

    # -- state -------------------------------------------------------------------
    def _tick(self) -> None:
        """Apply time-driven transitions that are due."""
        now = self._clock.monotonic()
        if self._state == "broken" and now - self._broken_at >= self._reset_timeout:
            self._probe_free = True
            self._set("probing")
        elif (
            self._state == "probing"
            and not self._probe_free
            and now - self._probe_taken_at >= self._reset_timeout
        ):
            # The probe never reported: release the slot instead of staying stuck.
            self._probe_free = True

    @property
    def state(self) -> BreakerState:
        self._tick()
        return self._state

    @property
    def is_healthy(self) -> bool:
        return self.state == "healthy"

    @property
    def failures(self) -> int:
        return self._failures

    def _set(self, new: BreakerState) -> None:
        old = self._state
        if old == new:
            return
        self._state = new
        for listener in list(self._listeners.values()):
            try:
                listener(old, new)
            except Exception:
                log.exception("circuit breaker listener failed")

    def _arm(self) -> None:
        self._broken_at = self._clock.monotonic()
        self._cancel_timer()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: transitions are applied lazily on the next access
        group = _runtime.current().task_group("circuit-breaker")
        self._timer = group.spawn(self._wake_after(self._reset_timeout), name="uwsx-breaker")

    async def _wake_after(self, seconds: float) -> None:
        await self._clock.sleep(seconds)
        self._timer = None
        self._tick()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- protocol ------------------------------------------------------------------
    def guard(self) -> None:
        """Pass when healthy, or take the single probe when probing; otherwise raise
        :class:`CircuitBrokenError`."""
        self._tick()
        if self._state == "healthy":
            return
        if self._state == "probing" and self._probe_free:
            self._probe_free = False
            self._probe_taken_at = self._clock.monotonic()
            return
        raise CircuitBrokenError()

    def success(self) -> None:
        """Record a successful call. Heals a probing breaker; no effect while broken."""
        self._tick()
        if self._state == "probing":
            self._cancel_timer()
            self._failures = 0
            self._probe_free = False
            self._set("healthy")
        elif self._state == "healthy":
            self._failures = 0

    def failure(self, error: BaseException | None = None) -> None:
        """Record a failed call (``error`` is informational)."""
        self._tick()
        self._failures = min(self._failures + 1, self._threshold)
        if self._state == "probing":
            self._probe_free = False
            self._set("broken")
            self._arm()
        elif self._state == "healthy" and self._failures >= self._threshold:
            self._set("broken")
            self._arm()

    def reset(self) -> None:
        """Force healthy with zero failures."""
        self._cancel_timer()
        self._failures = 0
        self._probe_free = False
        self._set("healthy")

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(from_state, to_state)`` on every real transition; returns an
        unsubscribe function. Listener errors are logged, never propagated."""
        if not callable(listener):
            raise TypeError("subscribe handler must be a function")
        if len(self._listeners) >= MAX_BREAKER_LISTENERS:
            raise RuntimeError(f"circuit breaker listener count exceeded {MAX_BREAKER_LISTENERS}")
        self._serial += 1
        token = self._serial
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    def close(self) -> None:
        """Stop the probe timer."""
        self._cancel_timer()


async def with_breaker(breaker: CircuitBreaker | None, call: Callable[[], Awaitable[_T]]) -> _T:
    """Guard, await ``call()``, then record success or failure (and re-raise)."""
    if breaker is None:
        return await call()
    breaker.guard()
    try:
        result = await call()
    except BaseException as exc:
        if not isinstance(exc, asyncio.CancelledError):
            breaker.failure(exc)
        raise
    breaker.success()
    return result
