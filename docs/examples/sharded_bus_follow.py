"""The sharded bus: an instance receives only the topics it follows, one channel per shard
label, and ``publish_batched`` travels as one envelope per shard channel."""

from __future__ import annotations

import asyncio

import uwsx
from uwsx import LocalPlatform, Message, ShardedBus


async def main() -> None:
    a_backend = await uwsx.connect("memory://demo-sharded")
    b_backend = await uwsx.connect("memory://demo-sharded")

    def by_prefix(topic: str) -> str:
        return topic.split(":")[0]  # "chat:room1" and "chat:room2" share the "chat" shard

    a, b = ShardedBus(a_backend, shard_key=by_prefix), ShardedBus(b_backend, shard_key=by_prefix)
    pa, pb = LocalPlatform(), LocalPlatform()
    await a.activate(pa)
    await b.activate(pb)

    # On instance B a client subscribes; the hooks make the bus follow its topics.
    client = pb.connect(id="client")
    for topic in ("chat:room1", "audit:org1"):
        client.subscribe(topic)
    await b.hooks.subscribe_batch(client, ["chat:room1", "audit:org1"])
    print("B subscribed channels:", sorted(b.subscribed_channels()))

    relay = a.wrap(pa)
    relay.publish("chat:room1", "msg", {"text": "hello"})
    relay.publish("sports:live", "goal", 1)  # nobody follows it on B: never delivered there
    relay.publish_batched([Message("chat:room1", "msg", 1), Message("audit:org1", "created", 2)])
    await asyncio.sleep(0.05)
    print("client on B received:", [(f.topic, f.event) for f in client.frames])
    assert [f.topic for f in client.frames].count("sports:live") == 0

    await b.hooks.close(client)
    print("after close:", sorted(b.subscribed_channels()))
    for bus in (a, b):
        await bus.close()
    for backend in (a_backend, b_backend):
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
