"""ShardedBus regressions: the seed spec §4.5/§23 B3-B4 lost subscriptions and the
simulator-found SB-1 bug, on every backend kind with a pubsub port and ``sharded_pubsub``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from tests.features.sharded_bus_support import active
from tests.helpers import Opener, eventually, settle
from uwsx.errors import CircuitBrokenError, Indeterminate
from uwsx.ports.backend import Backend, Capability
from uwsx.ports.pubsub import Subscription
from uwsx.reliability import CircuitBreaker
from uwsx.testing import (
    FaultyBackend,
    ManualClock,
    MockConnection,
    Published,
)

pytestmark = pytest.mark.needs("sharded_pubsub")


# -- regressions: §4.5 / §23 B3, B4, and uwsx_sim SB-1 ------------------------------------------


class _LostRemoveReply:
    """A subscription whose unsubscribe reaches the adapter (which forgets the channels at once,
    as every adapter does) but whose reply is lost."""

    def __init__(self, inner: Subscription) -> None:
        self._inner = inner

    @property
    def channels(self) -> frozenset[str]:
        return self._inner.channels

    @property
    def healthy(self) -> bool:
        return self._inner.healthy

    async def add(self, channels: Iterable[str]) -> None:
        await self._inner.add(channels)

    async def remove(self, channels: Iterable[str]) -> None:
        await self._inner.remove(channels)
        raise Indeterminate("injected: the unsubscribe reply was lost")

    async def close(self) -> None:
        await self._inner.close()


class _LosingRemoveReplies(FaultyBackend):
    @property
    def pubsub(self) -> Any:
        inner = super().pubsub

        class PubSubProxy:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            async def subscribe(self, *args: Any, **kwargs: Any) -> Subscription:
                return _LostRemoveReply(await inner.subscribe(*args, **kwargs))

        return PubSubProxy()


async def test_follow_after_a_failed_unsubscribe_subscribes_again(open_backend: Opener) -> None:
    """uwsx_sim sharded-bus-partition seed 1 (SB-1, SB-4): the bus kept a channel whose
    unsubscribe failed in its own subscribed set while the adapter had dropped it, so a later
    follow never re-added it and the follower silently missed every message."""
    a, pa = await active(await open_backend())
    b, pb = await active(_LosingRemoveReplies(await open_backend()))
    await b.follow("t")
    await b.unfollow("t")
    assert b.subscribed_channels() == frozenset()
    await b.follow("t")
    assert b.subscribed_channels() == frozenset({"uws:sharded:t"})
    a.wrap(pa).publish("t", "m", 1)
    await eventually(lambda: len(pb.published) == 1)
    assert pb.published == [Published("t", "m", 1, relay=False)]
    await a.close()
    await b.close()


async def test_follow_under_a_broken_breaker_is_not_forgotten(backend: Backend) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    bus, _ = await active(backend, breaker=breaker)
    breaker.failure()
    with pytest.raises(CircuitBrokenError):
        await bus.follow("x")
    assert bus.followed() == {}
    breaker.reset()
    await bus.follow("x")
    assert bus.subscribed_channels() == {"uws:sharded:x"}
    await bus.close()


async def test_failed_hook_follow_is_retried_until_it_succeeds(
    open_backend: Opener, clock: ManualClock
) -> None:
    faulty = FaultyBackend(await open_backend())
    a, pa = await active(await open_backend())
    b, pb = await active(faulty, retry_interval=1.0)
    ws = MockConnection()
    faulty.faults.fail("subscription.add")
    await b.hooks.subscribe(ws, "chat")  # does not raise: the hook keeps the interest
    assert b.hooks.topics_of(ws) == frozenset()
    assert b.hooks.pending_of(ws) == {"chat"}
    await clock.advance(1.0)
    assert b.hooks.pending_of(ws) == {"chat"}  # still failing: retried with backoff
    faulty.faults.heal()
    await clock.advance(2.0)
    await eventually(lambda: b.hooks.topics_of(ws) == {"chat"})
    a.wrap(pa).publish("chat", "m", 1)
    await eventually(lambda: len(pb.published) == 1)
    await b.hooks.close(ws)
    assert b.followed() == {}
    await a.close()
    await b.close()


async def test_hook_retry_resumes_at_once_when_the_breaker_heals(backend: Backend) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    bus, _ = await active(backend, breaker=breaker, retry_interval=100.0)
    ws = MockConnection()
    breaker.failure()
    await bus.hooks.subscribe(ws, "chat")
    assert bus.hooks.pending_of(ws) == {"chat"}
    breaker.reset()
    await eventually(lambda: bus.hooks.topics_of(ws) == {"chat"})
    assert bus.subscribed_channels() == {"uws:sharded:chat"}
    await bus.close()


async def test_unsubscribe_cancels_a_pending_hook_follow(
    backend: Backend, clock: ManualClock
) -> None:
    faulty = FaultyBackend(backend)
    bus, _ = await active(faulty, retry_interval=1.0)
    ws = MockConnection()
    faulty.faults.fail("subscription.add", times=1)
    await bus.hooks.subscribe(ws, "chat")
    await bus.hooks.unsubscribe(ws, "chat")
    await clock.advance(5.0)
    await settle()
    assert (bus.followed(), bus.subscribed_channels()) == ({}, frozenset())
    await bus.close()


async def test_capability_is_what_is_checked_not_a_server_version(backend: Backend) -> None:
    assert Capability.SHARDED_PUBSUB in backend.capabilities
    bus, _ = await active(backend)
    assert bus.active
    await bus.close()
