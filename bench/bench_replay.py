"""Replay publish throughput against the raw redis-py floor at the same concurrency.

``ReplayBuffer.publish`` (sorted-set and stream storage) is one script call per message; the
floors are raw redis-py doing the same work by hand (``EVALSHA`` of an equivalent
HINCRBY + ZADD + trim script) and the cheapest command there is (``INCR``), each with the same
number of concurrent tasks. At concurrency 16 the adapter pipelines what the tasks issue in
one event-loop tick, raw redis-py sends one request per task. Runs on a throwaway redis-server
(about 30 s)::

    python bench/bench_replay.py [--seconds 1.0] [--repeat 3] [--write]
"""

from __future__ import annotations

import json

import bench_common as bc
import redis.asyncio

import uwsx
from uwsx.features.replay import ReplayBuffer
from uwsx.platform import LocalPlatform

#: Same steps as the adapter's log_append script without its first-use epoch bookkeeping.
EQUIVALENT = """
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('ZADD', KEYS[2], seq, seq .. ':' .. ARGV[1])
local size = redis.call('ZCARD', KEYS[2])
local keep = tonumber(ARGV[2])
if size > keep then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, size - keep - 1)
end
redis.call('PERSIST', KEYS[2])
return seq
"""

DATA = {"user": "alice", "text": "hello there, this is a chat message of typical size"}


async def measure(url: str, seconds: float, repeat: int) -> list[str]:
    raw = redis.asyncio.Redis.from_url(url, max_connections=64)
    backend = await uwsx.connect(url, key_prefix="bench-replay:")
    platform = LocalPlatform()
    zset = ReplayBuffer(backend, size=1000)
    stream = ReplayBuffer(backend, storage="stream", size=1000)
    sha = await raw.script_load(EQUIVALENT)
    payload = json.dumps({"e": "msg", "d": DATA})

    def stats() -> dict[str, int]:
        return dict(getattr(backend, "stats", {}))

    sections = []
    try:
        for tasks in (1, 16):
            cases = {
                "raw redis-py INCR (absolute floor)": lambda i: raw.incr("raw:counter"),
                "raw redis-py EVALSHA equivalent script": lambda i: raw.evalsha(
                    sha, 2, "raw:{t}:seq", "raw:{t}:log", payload, 1000
                ),
                "uwsx ReplayBuffer.publish (sortedset)": lambda i: zset.publish(
                    platform, "chat", "msg", DATA
                ),
                "uwsx ReplayBuffer.publish (stream)": lambda i: stream.publish(
                    platform, "chat", "msg", DATA
                ),
            }
            rates: dict[str, bc.Rate] = {}
            batching: dict[str, str] = {}
            for name, op in cases.items():
                before = stats()
                rates[name] = await bc.rate(op, tasks=tasks, seconds=seconds, repeat=repeat)
                after = stats()
                if name.startswith("uwsx") and after:
                    ops = after["ops"] - before["ops"]
                    trips = max(1, after["round_trips"] - before["round_trips"])
                    batching[name] = f"{ops / trips:.1f}"
            script = rates["raw redis-py EVALSHA equivalent script"].median
            floor = rates["raw redis-py INCR (absolute floor)"].median
            rows = [
                [
                    name,
                    bc.fmt_rate(r),
                    f"{r.median / script:.2f}",
                    f"{r.median / floor:.2f}",
                    batching.get(name, "1.0"),
                ]
                for name, r in rates.items()
            ]
            header = ["case", "ops/s median", "x script floor", "x INCR floor", "ops/round trip"]
            sections.append(bc.table(f"Concurrency {tasks}", header, rows))
            print(sections[-1], flush=True)
    finally:
        await backend.log.delete_prefix("")  # type: ignore[union-attr]
        await backend.stream.delete_prefix("")  # type: ignore[union-attr]
        await raw.delete("raw:counter", "raw:{t}:seq", "raw:{t}:log")
        await backend.close()
        await raw.aclose()
    return sections


NOTES = """
Each row: N concurrent asyncio tasks each awaiting one operation at a time for `--seconds`,
repeated `--repeat` times after a short warm-up (median and IQR of ops/s). Same process, same
event loop, loopback TCP (with `--pin`, server on CPU 0 and client on CPU 1). "ops/round trip" is
the adapter's own count of operations per request batch (auto-pipelining): raw redis-py always
sends one request per call. The equivalent script does what the adapter's `log_append` does
minus its first-use epoch bookkeeping, so "x script floor" is the overhead of uwsx over doing
the same atomic step by hand with redis-py.
"""


def main() -> None:
    bc.redis_main(
        "bench_replay", "Replay publish throughput vs raw redis-py", __doc__ or "", NOTES, measure
    )


if __name__ == "__main__":
    main()
