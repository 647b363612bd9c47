"""Per-operation cost of the Redis adapter against raw redis-py, measured in the same run.

Starts a throwaway ``redis-server`` (the test harness's, which honours ``UWSX_TEST_REDIS_URL``)
and, for each concurrency, runs N tasks each awaiting one operation at a time. Cases are
interleaved (every case once, then every case again, ``--repeat`` times) so that a change of
machine load hits all of them alike; the table shows the median and IQR of ops/s, the ratio to
raw redis-py ``INCR``, the client's CPU time per operation and the operations per round trip
the adapter sent. Never a timed assertion: run it by hand (about a minute)::

    python bench/redis_throughput.py [--seconds 1.0] [--repeat 5] [--tasks 1 16] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Awaitable, Callable, Mapping

import bench_common as bc
import redis.asyncio

from uwsx_redis import RedisBackend, open_backend

Op = Callable[[int], Awaitable[object]]


def _cases(raw: redis.asyncio.Redis, piped: RedisBackend, plain: RedisBackend) -> dict[str, Op]:
    return {
        "raw redis-py INCR": lambda i: raw.incr("bench:raw"),
        "raw redis-py GET": lambda i: raw.get("bench:raw"),
        "uwsx kv.incr": lambda i: piped.kv.incr("n"),
        "uwsx kv.incr (auto_pipeline=False)": lambda i: plain.kv.incr("n"),
        "uwsx kv.get": lambda i: piped.kv.get("n"),
        "uwsx log.append (script)": lambda i: piped.log.append("b", "e", "{}", max_size=100),
        "uwsx kv.map_put (script)": lambda i: piped.kv.map_put("m", f"f{i % 50}", "v", ttl=30),
    }


async def _measure(
    cases: Mapping[str, Op],
    owner: Mapping[str, RedisBackend],
    tasks: int,
    seconds: float,
    repeat: int,
) -> str:
    runs: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    ops: dict[str, int] = dict.fromkeys(cases, 0)
    trips: dict[str, int] = dict.fromkeys(cases, 0)
    for op in cases.values():  # warm-up: connections opened, scripts cached
        await bc.run_once(op, tasks=tasks, seconds=0.2)
    for _ in range(repeat):
        for name, op in cases.items():
            backend = owner.get(name)
            before = dict(backend.stats) if backend is not None else {}
            rate, cost = await bc.run_once(op, tasks=tasks, seconds=seconds)
            runs[name].append(rate)
            cpu[name].append(cost)
            if backend is not None:
                ops[name] += backend.stats["ops"] - before["ops"]
                trips[name] += backend.stats["round_trips"] - before["round_trips"]
    rates = {name: bc.summarize(tuple(r)) for name, r in runs.items()}
    base = rates["raw redis-py INCR"].median
    rows = [
        [
            name,
            bc.fmt_rate(r),
            f"{r.median / base:.2f}",
            f"{statistics.median(cpu[name]) * 1e6:.0f}",
            f"{ops[name] / trips[name]:.1f}" if trips[name] else "1.0",
        ]
        for name, r in rates.items()
    ]
    header = ["case", "ops/s median", "x raw INCR", "client CPU us/op", "ops/round trip"]
    return bc.table(f"Concurrency {tasks}", header, rows)


async def main(url: str, seconds: float, repeat: int, concurrency: list[int]) -> list[str]:
    raw = redis.asyncio.Redis.from_url(url, max_connections=64)
    piped = await open_backend(url, key_prefix="bench:")
    plain = await open_backend(url, key_prefix="bench:", auto_pipeline=False)
    cases = _cases(raw, piped, plain)
    owner = {name: plain if "auto_pipeline=False" in name else piped for name in cases}
    owner = {name: b for name, b in owner.items() if name.startswith("uwsx")}
    sections = []
    try:
        for tasks in concurrency:
            sections.append(await _measure(cases, owner, tasks, seconds, repeat))
            print(sections[-1], flush=True)
    finally:
        await piped.kv.delete_prefix("")
        await piped.log.delete_prefix("")
        await raw.delete("bench:raw")
        await piped.close()
        await plain.close()
        await raw.aclose()
    return sections


NOTES = """
Each row: N concurrent asyncio tasks each awaiting one operation at a time for `--seconds`; the
cases run interleaved `--repeat` times after a warm-up (median and IQR of ops/s). Same process,
same event loop, loopback TCP, client and server sharing the machine. "ops/round trip" is the
adapter's own count of operations per request batch (auto-pipelining); raw redis-py sends one
request per call. `kv.incr` without a TTL is one `INCRBY`, so its row against raw `INCR` is the
adapter's own per-operation cost; `log.append` and `map_put` are one `EVALSHA` each. "client
CPU us/op" is the benchmark process's CPU time per completed operation (median over the runs):
what the client spends per call, which a busy machine disturbs far less than ops/s.
"""


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--write", action="store_true", help="update bench/results/")
    parser.add_argument("--pin", action="store_true", help="server on CPU 0, client on CPU 1")
    args = parser.parse_args()
    with bc.redis_server(pin_cpus=args.pin) as url:
        print(f"redis at {url}; {bc.machine()}\n", flush=True)
        sections = asyncio.run(main(url, args.seconds, args.repeat, args.tasks))
    if args.write:
        path = bc.write_results(
            "redis_throughput", "Redis adapter per-operation cost vs raw redis-py", sections, NOTES
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    cli()
