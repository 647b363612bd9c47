"""Replay publish and bus relay on PostgreSQL against the raw asyncpg floor.

* Replay: ``ReplayBuffer.publish`` (one ``INSERT ... ON CONFLICT`` counter upsert with the
  entry insert and trim in one statement) against raw asyncpg running the bare counter upsert
  ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` on one key (the floor: the cheapest
  statement that hands out a sequence number), at 1 and 16 concurrent tasks. Both use a pool of
  10 connections.
* Bus: messages per second a second instance receives through ``PubSubBus`` over
  LISTEN/NOTIFY, against raw asyncpg ``SELECT pg_notify(...)`` per message with an asyncpg
  listener that JSON-decodes each payload (window of in-flight messages as in
  ``bench_bus.py``).

Runs on a throwaway PostgreSQL 15 started by the test harness (``fsync=off``,
``synchronous_commit=off``; about 40 s)::

    python bench/bench_postgres.py [--seconds 1.0] [--repeat 3] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import asyncpg
import bench_common as bc
from bench_bus import DATA, CountingPlatform, Flow, throughput

import uwsx
from uwsx.features.bus import PubSubBus
from uwsx.features.replay import ReplayBuffer
from uwsx.platform import LocalPlatform

COUNTER = """
INSERT INTO bench_counter AS c (k, n) VALUES ($1, 1)
ON CONFLICT (k) DO UPDATE SET n = c.n + 1 RETURNING c.n"""


async def replay(url: str, dsn: str, seconds: float, repeat: int) -> list[str]:
    pool: Any = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_counter (k text PRIMARY KEY, n bigint)")
    backend = await uwsx.connect(url, key_prefix="bench-pg:")
    zset = ReplayBuffer(backend, size=1000)
    platform = LocalPlatform()
    await zset.publish(platform, "warm", "msg", DATA)  # creates the tables
    sections = []
    try:
        for tasks in (1, 16):
            floor = await bc.rate(
                lambda i: pool.fetchval(COUNTER, "hot"), tasks=tasks, seconds=seconds, repeat=repeat
            )
            ours = await bc.rate(
                lambda i: zset.publish(platform, "chat", "msg", DATA),
                tasks=tasks,
                seconds=seconds,
                repeat=repeat,
            )
            rows = [
                ["raw asyncpg INSERT ... ON CONFLICT counter (floor)", bc.fmt_rate(floor), "1.00"],
                [
                    "uwsx ReplayBuffer.publish",
                    bc.fmt_rate(ours),
                    f"{ours.median / floor.median:.2f}",
                ],
            ]
            header = ["case", "ops/s median", "x floor"]
            sections.append(bc.table(f"Replay publish, concurrency {tasks}", header, rows))
            print(sections[-1], flush=True)
    finally:
        await pool.execute("DROP TABLE IF EXISTS bench_counter")
        await backend.log.delete_prefix("")  # type: ignore[union-attr]
        await backend.close()
        await pool.close()
    return sections


async def raw_bus(dsn: str, tasks: int, seconds: float, repeat: int) -> bc.Rate:
    flow = Flow()
    pool: Any = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    listener: Any = await asyncpg.connect(dsn)
    envelope = json.dumps(
        {"instanceId": "0123456789abcdef", "topic": "chat", "event": "msg", "data": DATA}
    )

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        json.loads(payload)
        flow.got()

    await listener.add_listener("bench_raw_bus", on_notify)

    async def send() -> None:
        await pool.execute("SELECT pg_notify($1, $2)", "bench_raw_bus", envelope)

    try:
        return await throughput(flow, send, tasks=tasks, seconds=seconds, repeat=repeat)
    finally:
        await listener.close()
        await pool.close()


async def uwsx_bus(url: str, tasks: int, seconds: float, repeat: int) -> bc.Rate:
    flow = Flow()
    a_backend = await uwsx.connect(url, key_prefix="bench-pg-bus:")
    b_backend = await uwsx.connect(url, key_prefix="bench-pg-bus:")
    a_bus, b_bus = PubSubBus(a_backend), PubSubBus(b_backend, system_channel=None)
    await b_bus.activate(CountingPlatform(flow))
    wrapped = a_bus.wrap(LocalPlatform())

    async def send() -> None:
        wrapped.publish("chat", "msg", DATA)
        await asyncio.sleep(0)

    try:
        return await throughput(flow, send, tasks=tasks, seconds=seconds, repeat=repeat)
    finally:
        await a_bus.close()
        await b_bus.close()
        await a_backend.close()
        await b_backend.close()


async def bus(url: str, dsn: str, seconds: float, repeat: int) -> list[str]:
    sections = []
    for tasks in (1, 16):
        raw = await raw_bus(dsn, tasks, seconds, repeat)
        ours = await uwsx_bus(url, tasks, seconds, repeat)
        rows = [
            ["raw asyncpg pg_notify (floor)", bc.fmt_rate(raw), "1.00"],
            ["uwsx PubSubBus relay", bc.fmt_rate(ours), f"{ours.median / raw.median:.2f}"],
        ]
        header = ["case", "received msgs/s median", "x floor"]
        sections.append(bc.table(f"Bus relay, concurrency {tasks}", header, rows))
        print(sections[-1], flush=True)
    return sections


NOTES = """
Same method as `bench_replay.md` and `bench_bus.md` (N concurrent tasks, median and IQR of
`--repeat` runs), on a local PostgreSQL 15 over loopback TCP with `fsync=off` and
`synchronous_commit=off` (the test harness's settings, as pgqueuer benchmarks; a durable
configuration waits for the WAL flush on every commit and lowers every row alike). The Postgres
adapter runs one statement per operation on a pooled connection and does not pipeline: a
publish is one round trip whatever the concurrency, so the ratios show the cost of the
statement itself (a counter upsert, the entry insert and the trim, against a bare upsert) and,
for the bus, of `publish_many` (one `pg_notify` per message in one statement) against one
statement per message.
"""


async def measure(url: str, dsn: str, seconds: float, repeat: int) -> list[str]:
    return [*await replay(url, dsn, seconds, repeat), *await bus(url, dsn, seconds, repeat)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update bench/results/")
    args = parser.parse_args()
    with bc.postgres_server() as (url, dsn):
        print(f"postgres at {dsn}; {bc.machine()}\n", flush=True)
        sections = asyncio.run(measure(url, dsn, args.seconds, args.repeat))
    if args.write:
        path = bc.write_results(
            "bench_postgres", "Replay publish and bus relay on PostgreSQL", sections, NOTES
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
