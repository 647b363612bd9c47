"""Two instances relay publishes to each other through one backend (memory:// here; use
redis://... or postgresql://... in production)."""

from __future__ import annotations

import asyncio

import uwsx
from uwsx import LocalPlatform, PubSubBus


async def main() -> None:
    # Each "instance" is a platform (your WebSocket server) plus a bus on its own backend client.
    a_backend = await uwsx.connect("memory://demo-bus")
    b_backend = await uwsx.connect("memory://demo-bus")
    a, b = LocalPlatform(), LocalPlatform()
    a_bus, b_bus = PubSubBus(a_backend), PubSubBus(b_backend)
    await a_bus.activate(a)
    await b_bus.activate(b)

    alice = b.connect(id="alice")  # connected to instance B
    alice.subscribe("chat")
    arrived = asyncio.Event()
    alice.on_frame = lambda frame: arrived.set()

    a_bus.wrap(a).publish("chat", "message", {"text": "hello from A"})
    await asyncio.wait_for(arrived.wait(), timeout=5)
    print(alice.frames[0])

    for bus in (a_bus, b_bus):
        await bus.close()
    for backend in (a_backend, b_backend):
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
