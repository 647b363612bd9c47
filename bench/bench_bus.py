"""Bus relay throughput: messages per second a second instance receives, against raw redis-py.

Instance A publishes through ``PubSubBus.wrap(platform)`` from N concurrent tasks; instance B
(another connection in this process) receives, validates and delivers them locally. The floor
is raw redis-py: N tasks awaiting ``PUBLISH`` of an envelope of the same size, and a raw
``SUBSCRIBE`` reader that JSON-decodes each message (the least a receiver does with it). A
window of in-flight messages keeps every sender from outrunning its receiver. Runs on a
throwaway redis-server (about 30 s)::

    python bench/bench_bus.py [--seconds 1.0] [--repeat 3] [--write]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import bench_common as bc
import redis.asyncio

import uwsx
from uwsx.features.bus import PubSubBus
from uwsx.platform import LocalPlatform, Message

DATA = {"user": "alice", "text": "hello there, this is a chat message of typical size", "n": 0}
WINDOW = 2000


class Flow:
    """Messages sent and received, and the window that holds senders back."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.room = asyncio.Event()
        self.room.set()
        self.drained = asyncio.Event()

    def got(self, n: int = 1) -> None:
        self.received += n
        if self.sent - self.received < WINDOW // 2:
            self.room.set()
        if self.received >= self.sent:
            self.drained.set()

    async def admit(self) -> None:
        while self.sent - self.received >= WINDOW:
            self.room.clear()
            await self.room.wait()
        self.sent += 1


class CountingPlatform(LocalPlatform):
    """B's platform: counts what the bus delivers."""

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def publish(self, topic: str, event: str, data: Any = None, *, relay: bool = True) -> bool:
        self.flow.got()
        return False

    def publish_batched(self, messages: Sequence[Message]) -> None:
        self.flow.got(len(messages))


async def throughput(
    flow: Flow,
    send: Callable[[], Awaitable[None]],
    *,
    tasks: int,
    seconds: float,
    repeat: int,
) -> bc.Rate:
    """Received messages per second while ``tasks`` senders loop on ``send``."""
    stop = False

    async def sender() -> None:
        while not stop:
            await flow.admit()
            await send()

    workers = [asyncio.ensure_future(sender()) for _ in range(tasks)]
    try:
        await asyncio.sleep(0.2)  # warm-up
        runs = []
        for _ in range(repeat):
            r0, t0 = flow.received, time.perf_counter()
            await asyncio.sleep(seconds)
            runs.append((flow.received - r0) / (time.perf_counter() - t0))
    finally:
        stop = True
        await asyncio.gather(*workers, return_exceptions=True)
    if flow.received < flow.sent:  # drain before the next case
        flow.drained.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(flow.drained.wait(), 10)
    return bc.summarize(tuple(runs))


async def raw_case(url: str, tasks: int, seconds: float, repeat: int, batch: int) -> bc.Rate:
    flow = Flow()
    pub = redis.asyncio.Redis.from_url(url, max_connections=64)
    sub = redis.asyncio.Redis.from_url(url)
    ps = sub.pubsub()
    await ps.subscribe("raw:bus")
    envelope = json.dumps({"instanceId": "0123456789abcdef", "topic": "chat", "event": "msg",
                           "data": DATA})  # fmt: skip

    async def reader() -> None:
        async for message in ps.listen():
            if message["type"] == "message":
                json.loads(message["data"])
                flow.got()

    reading = asyncio.ensure_future(reader())

    async def one() -> None:
        await pub.publish("raw:bus", envelope)

    async def many() -> None:
        pipe = pub.pipeline(transaction=False)
        for _ in range(batch):
            pipe.publish("raw:bus", envelope)
        flow.sent += batch - 1
        await pipe.execute()

    try:
        send = one if batch == 1 else many
        return await throughput(flow, send, tasks=tasks, seconds=seconds, repeat=repeat)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await ps.aclose()  # type: ignore[no-untyped-call]
        await sub.aclose()
        await pub.aclose()


async def uwsx_case(url: str, tasks: int, seconds: float, repeat: int) -> tuple[bc.Rate, str]:
    flow = Flow()
    a_backend = await uwsx.connect(url, key_prefix="bench-bus:")
    b_backend = await uwsx.connect(url, key_prefix="bench-bus:")
    a_bus, b_bus = PubSubBus(a_backend), PubSubBus(b_backend, system_channel=None)
    await b_bus.activate(CountingPlatform(flow))
    wrapped = a_bus.wrap(LocalPlatform())

    async def send() -> None:
        wrapped.publish("chat", "msg", DATA)
        await asyncio.sleep(0)  # one message per task per tick

    before = dict(getattr(a_backend, "stats", {}))
    try:
        rate = await throughput(flow, send, tasks=tasks, seconds=seconds, repeat=repeat)
    finally:
        after = dict(getattr(a_backend, "stats", {}))
        await a_bus.close()
        await b_bus.close()
        await a_backend.close()
        await b_backend.close()
    trips = max(1, after.get("round_trips", 0) - before.get("round_trips", 0))
    return rate, f"{flow.sent / trips:.0f}"


async def measure(url: str, seconds: float, repeat: int) -> list[str]:
    sections = []
    for tasks in (1, 16):
        raw = await raw_case(url, tasks, seconds, repeat, batch=1)
        piped = await raw_case(url, tasks, seconds, repeat, batch=100)
        bus, per_trip = await uwsx_case(url, tasks, seconds, repeat)
        rows = [
            ["raw redis-py PUBLISH (floor)", bc.fmt_rate(raw), "1.00", "1"],
            [
                "raw redis-py PUBLISH, pipelines of 100",
                bc.fmt_rate(piped),
                f"{piped.median / raw.median:.2f}",
                "100",
            ],
            ["uwsx PubSubBus relay", bc.fmt_rate(bus), f"{bus.median / raw.median:.2f}", per_trip],
        ]
        header = ["case", "received msgs/s median", "x raw PUBLISH", "msgs per round trip"]
        sections.append(bc.table(f"Concurrency {tasks}", header, rows))
        print(sections[-1], flush=True)
    return sections


NOTES = f"""
"Received msgs/s" is counted at the receiving side (instance B, or the raw subscriber) over
`--seconds`, repeated `--repeat` times after a warm-up, median and IQR. Publisher and receiver
run in one process and one event loop (they share the client CPU), over loopback TCP; at most
{WINDOW} messages are in flight. Raw senders await each `PUBLISH` (one round trip per message
per task); uwsx senders call `publish` on the wrapped platform, which never waits, and yield
once per message: the bus relays what a tick produced as one `publish_many` and the adapter
pipelines the relays of a tick ("msgs per round trip" is per request batch the adapter sent). The
pipelined raw row is a batching reference, not the floor. With one sender a tick holds one
message, so every relay is its own round trip and the per-message cost of the relay path (a
task per flush, a pipeline per tick) shows; the adapter does not hold a tick's operations back
while earlier batches are in flight, which is what would let it coalesce across ticks.
"""


def main() -> None:
    bc.redis_main(
        "bench_bus", "Bus relay throughput vs raw redis-py", __doc__ or "", NOTES, measure
    )


if __name__ == "__main__":
    main()
