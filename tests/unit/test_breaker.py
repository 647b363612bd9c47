"""CircuitBreaker: seed spec §1.1 acceptance statements plus the stuck-probe fix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from uwsx import CircuitBrokenError
from uwsx.reliability import CircuitBreaker
from uwsx.testing import ManualClock, manual_runtime


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    with manual_runtime() as c:
        yield c


def test_fresh_breaker_is_healthy() -> None:
    b = CircuitBreaker()
    assert (b.state, b.is_healthy, b.failures) == ("healthy", True, 0)


def test_threshold_failures_break_it() -> None:
    b = CircuitBreaker(failure_threshold=3)
    b.failure()
    b.failure()
    assert (b.state, b.failures) == ("healthy", 2)
    b.failure()
    assert b.state == "broken"
    assert not b.is_healthy


def test_guard_raises_when_broken_and_passes_when_healthy() -> None:
    b = CircuitBreaker(failure_threshold=1)
    b.guard()
    b.failure()
    with pytest.raises(CircuitBrokenError, match="circuit breaker is open"):
        b.guard()


async def test_probing_after_reset_timeout_allows_one_probe(clock: ManualClock) -> None:
    b = CircuitBreaker(failure_threshold=1, reset_timeout=0.05)
    b.failure()
    await clock.advance(0.08)
    assert b.state == "probing"
    b.guard()
    with pytest.raises(CircuitBrokenError):
        b.guard()


async def test_probe_success_heals_and_probe_failure_rebreaks(clock: ManualClock) -> None:
    b = CircuitBreaker(failure_threshold=1, reset_timeout=1.0)
    b.failure()
    await clock.advance(1.0)
    b.guard()
    b.success()
    assert (b.state, b.failures) == ("healthy", 0)
    b.failure()
    await clock.advance(1.0)
    b.guard()
    b.failure()
    assert b.state == "broken"


def test_success_resets_failure_count() -> None:
    b = CircuitBreaker(failure_threshold=5)
    b.failure()
    b.failure()
    b.success()
    assert b.failures == 0


def test_failures_are_capped_at_threshold() -> None:
    b = CircuitBreaker(failure_threshold=3)
    for _ in range(10_000):
        b.failure()
    assert b.failures == 3


def test_reset_and_listener_sequence() -> None:
    seen: list[tuple[str, str]] = []
    b = CircuitBreaker(failure_threshold=1, on_state_change=lambda a, z: seen.append((a, z)))
    b.failure()
    assert seen == [("healthy", "broken")]
    b.reset()
    assert seen == [("healthy", "broken"), ("broken", "healthy")]
    assert (b.state, b.failures) == ("healthy", 0)


@pytest.mark.parametrize("threshold", [0, -1, 1.5, True])
def test_rejects_bad_threshold(threshold: object) -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=threshold)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [-1, float("nan"), float("inf")])
def test_rejects_bad_reset_timeout(timeout: float) -> None:
    with pytest.raises(ValueError, match="reset_timeout"):
        CircuitBreaker(reset_timeout=timeout)


def test_two_subscribers_and_unsubscribe() -> None:
    a: list[str] = []
    z: list[str] = []
    b = CircuitBreaker(failure_threshold=1)
    off_a = b.subscribe(lambda _o, n: a.append(n))
    b.subscribe(lambda _o, n: z.append(n))
    b.failure()
    off_a()
    b.reset()
    assert a == ["broken"]
    assert z == ["broken", "healthy"]


def test_throwing_subscriber_does_not_stop_others() -> None:
    got: list[str] = []

    def boom(_o: str, _n: str) -> None:
        raise RuntimeError("listener bug")

    b = CircuitBreaker(failure_threshold=1)
    b.subscribe(boom)
    b.subscribe(lambda _o, n: got.append(n))
    b.failure()
    assert got == ["broken"]


@pytest.mark.parametrize("handler", ["x", None])
def test_subscribe_rejects_non_callables(handler: object) -> None:
    with pytest.raises(TypeError, match="must be a function"):
        CircuitBreaker().subscribe(handler)  # type: ignore[arg-type]


async def test_stuck_probe_is_released_after_reset_timeout(clock: ManualClock) -> None:
    # The original stayed in probing forever when the probe never reported back.
    b = CircuitBreaker(failure_threshold=1, reset_timeout=1.0)
    b.failure()
    await clock.advance(1.0)
    b.guard()  # the probe is taken and never reports
    with pytest.raises(CircuitBrokenError):
        b.guard()
    await clock.advance(1.0)
    b.guard()  # a new probe is allowed
    b.success()
    assert b.state == "healthy"


async def test_timer_moves_to_probing_without_any_access(clock: ManualClock) -> None:
    seen: list[str] = []
    b = CircuitBreaker(failure_threshold=1, reset_timeout=2.0)
    b.subscribe(lambda _o, n: seen.append(n))
    b.failure()
    await clock.advance(2.0)
    assert seen == ["broken", "probing"]
    b.close()


def test_success_while_broken_does_nothing() -> None:
    b = CircuitBreaker(failure_threshold=1)
    b.failure()
    b.success()
    assert b.state == "broken"
