"""Presence leave-all: 1,000 users across 10,000 topics, on Redis and on memory.

Every user joins ``--per-user`` topics picked at random (seeded) from ``--topics``, so each
topic holds a user or two and nearly every leave is a last-holder leave that also empties the
topic (a removal, a leave event and an unsubscribe each). Then everyone leaves, three ways:

* mass disconnect: every user's ``leave(conn)`` (all topics) at once, as a server's close
  hooks would run when a node drops its clients;
* leave-all per user, one user after another;
* the sequential alternative: one ``leave(conn, topic)`` at a time.

Reports the time, round trips counted by ``CountingBackend`` (event-loop ticks that issued
operations: one pipeline each on Redis), the adapter's own request batches on Redis, and the
ratio to the mass disconnect. About 40 s::

    python bench/bench_presence.py [--users 1000] [--topics 10000] [--per-user 10] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import bench_common as bc

import uwsx
from uwsx.features.presence import Presence
from uwsx.platform import LocalConnection, LocalPlatform, Message
from uwsx.ports.backend import Backend
from uwsx.testing import CountingBackend


class QuietPlatform(LocalPlatform):
    """Delivers nothing: the clients' side of the diffs is not what is measured (the test
    platform finds subscribers by scanning every connection)."""

    def publish(self, topic: str, event: str, data: Any = None, *, relay: bool = True) -> bool:
        return False

    def publish_batched(self, messages: Sequence[Message]) -> None:
        return None


@dataclass
class Outcome:
    seconds: float
    round_trips: int | None
    ops: int | None


Opener = Callable[[], Awaitable[Backend]]


async def run(
    open_backend: Opener, variant: str, users: int, topics: int, per: int, *, count: bool
) -> Outcome:
    """One variant on a fresh namespace. ``count``: through ``CountingBackend`` (round trips
    as event-loop ticks that issued operations; its bookkeeping slows every operation, so the
    timed runs go without it); otherwise round trips are the adapter's own pipelines, if it
    counts them (Redis)."""
    backend = await open_backend()
    counting = CountingBackend(backend)
    presence = Presence(counting if count else backend, heartbeat=3600.0, ttl=7200.0)
    platform = QuietPlatform()
    rng = random.Random(1)
    conns = [platform.connect(LocalConnection(user_data={"id": f"u{i}"})) for i in range(users)]
    joined = {conn: rng.sample(range(topics), per) for conn in conns}
    # Set up with bounded concurrency (the subscribes of one burst are batched).
    pairs = [(conn, f"t{t}") for conn, ts in joined.items() for t in ts]
    for start in range(0, len(pairs), 2000):
        burst = pairs[start : start + 2000]
        await asyncio.gather(*(presence.join(c, t, platform) for c, t in burst))
    counting.reset()
    before = dict(getattr(backend, "stats", {}))
    started = time.perf_counter()
    if variant == "mass":
        await asyncio.gather(*(presence.leave(conn, platform) for conn in conns))
    elif variant == "per-user":
        for conn in conns:
            await presence.leave(conn, platform)
    else:
        for conn, ts in joined.items():
            for t in ts:
                await presence.leave(conn, platform, f"t{t}")
    elapsed = time.perf_counter() - started
    after = dict(getattr(backend, "stats", {}))
    if count:
        outcome = Outcome(elapsed, counting.round_trips, counting.total)
    elif after:
        trips = after["batches"] - before["batches"]
        outcome = Outcome(elapsed, trips, after["ops"] - before["ops"])
    else:
        outcome = Outcome(elapsed, None, None)
    left = await presence.count(f"t{joined[conns[0]][0]}")
    assert left == 0, f"{left} users left behind"
    await presence.clear()
    await presence.close()
    await backend.close()
    return outcome


VARIANTS = {
    "mass": "mass disconnect (all leave-alls at once)",
    "per-user": "leave-all per user, users in turn",
    "sequential": "sequential per-topic leaves",
}


async def measure(
    name: str, open_backend: Opener, users: int, topics: int, per: int, *, count: bool
) -> str:
    outcomes = {v: await run(open_backend, v, users, topics, per, count=False) for v in VARIANTS}
    if count:
        counted = {v: await run(open_backend, v, users, topics, per, count=True) for v in VARIANTS}
    else:
        counted = outcomes
    base = outcomes["mass"].seconds

    def n(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    rows = [
        [
            VARIANTS[v],
            f"{o.seconds * 1000:,.0f}",
            f"{o.seconds / base:.1f}",
            n(counted[v].round_trips),
            n(counted[v].ops),
        ]
        for v, o in outcomes.items()
    ]
    header = ["variant", "ms", "x mass", "round trips", "operations"]
    title = f"{name}: {users:,} users x {per} topics each, {topics:,} topics"
    return bc.table(title, header, rows)


NOTES = """
Round trips: on memory, event-loop ticks that issued port operations (`CountingBackend`, in a
second, untimed run), which is what an auto-pipelining adapter sends as one request batch each;
on Redis, the pipelines the adapter actually sent (its executor statistics; the unsubscribes
travel on the pub/sub connection and are not included). Operations: on memory, port calls (a
`publish_many` of a user's leave events is one); on Redis, the adapter's commands (one per
message). A mass disconnect issues every removal and every unsubscribe in one tick and every
leave event in one more, whatever the number of users. On Redis that tick is cut into pipelines
of at most 512 commands (the adapter's `max_batch`) whose replies land in different ticks, so
the users' leave events follow in a few dozen pipelines rather than one. The sequential
alternative pays a removal, an event and an unsubscribe per topic, one after another. Times are
one run each (setup excluded), in one process. On loopback the client's CPU per operation, not
the number of round trips, bounds every variant (the mass disconnect also carries 10,000
concurrent tasks, whose garbage collection costs more than the round trips it saves on memory);
`--latency-ms` puts Redis behind a delaying proxy, where round trips dominate.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--topics", type=int, default=10000)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="Redis only, behind a proxy adding this one-way delay (results in "
        "bench_presence_latency.md)",
    )
    parser.add_argument("--write", action="store_true", help="update bench/results/")
    parser.add_argument("--pin", action="store_true", help="server on CPU 0, client on CPU 1")
    args = parser.parse_args()
    shape = (args.users, args.topics, args.per_user)
    sections = []
    counter = iter(range(1_000_000))

    async def memory() -> Backend:
        return await uwsx.connect(f"memory://bench-presence-{next(counter)}")

    if not args.latency_ms:
        table = asyncio.run(measure("memory", memory, *shape, count=True))
        print(table, flush=True)
        sections.append(table)
    with bc.redis_server(pin_cpus=args.pin) as direct, bc.delayed(direct, args.latency_ms) as url:

        async def on_redis() -> Backend:
            return await uwsx.connect(url, key_prefix=f"bench-presence-{next(counter)}:")

        name = f"Redis + {2 * args.latency_ms:g} ms round trip" if args.latency_ms else "Redis"
        table = asyncio.run(measure(name, on_redis, *shape, count=False))
        print(table, flush=True)
        sections.append(table)
    if args.write:
        name = "bench_presence_latency" if args.latency_ms else "bench_presence"
        command = "python bench/bench_presence.py " + " ".join(sys.argv[1:])
        path = bc.write_results(name, "Presence leave-all", sections, NOTES, command=command)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
