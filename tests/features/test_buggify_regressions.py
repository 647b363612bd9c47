"""Regressions for feature bugs found while adding BUGGIFY sites (``uwsx._runtime.buggify``).

Each test reproduces, with plain concurrency on every backend, the interleaving a site widened
in the simulator.
"""

from __future__ import annotations

import asyncio

from tests.helpers import Opener, eventually, settle
from uwsx.features.bus import PubSubBus
from uwsx.testing import FaultyBackend, MockConnection, MockPlatform


async def test_bus_concurrent_activations_subscribe_once(open_backend: Opener) -> None:
    """Two connections opening in the same tick both run ``hooks.open``: the bus must end up
    with one subscription, so each remote message is delivered once (BUS-2). It used to
    subscribe twice and deliver everything twice."""
    a_bus, b_bus = PubSubBus(await open_backend()), PubSubBus(await open_backend())
    a, b = MockPlatform(), MockPlatform()
    await a_bus.activate(a)
    await asyncio.gather(
        b_bus.hooks.open(MockConnection(), platform=b),
        b_bus.hooks.open(MockConnection(), platform=b),
    )
    a_bus.wrap(a).publish("chat", "msg", 1)
    await eventually(lambda: any(m.topic == "chat" for m in b.published), what="delivery")
    await settle()
    assert [m.data for m in b.published if m.topic == "chat"] == [1]
    await a_bus.close()
    await b_bus.close()
    assert not b_bus.active


async def test_bus_deactivate_during_activation_wins(open_backend: Opener) -> None:
    """``deactivate()`` while ``activate()`` is still subscribing: once the subscription
    arrives it is closed again, so the bus ends inactive and delivers nothing (it used to stay
    subscribed with no target)."""
    faulty = FaultyBackend(await open_backend())
    buses = [PubSubBus(await open_backend()), PubSubBus(faulty), PubSubBus(await open_backend())]
    a, b, witness = MockPlatform(), MockPlatform(), MockPlatform()
    await buses[0].activate(a)
    await buses[2].activate(witness)
    gate = faulty.faults.gate("pubsub.subscribe", after=True)
    activation = asyncio.ensure_future(buses[1].activate(b))
    await eventually(lambda: bool(faulty.faults.called("pubsub.subscribe")), what="subscribing")
    await buses[1].deactivate()
    gate.set()
    await activation
    assert not buses[1].active
    buses[0].wrap(a).publish("chat", "msg", 1)
    await eventually(lambda: any(m.topic == "chat" for m in witness.published), what="relay")
    await settle()
    assert [m for m in b.published if m.topic == "chat"] == []
    for bus in buses:
        await bus.close()
