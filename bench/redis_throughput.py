"""Throughput of the Redis adapter against raw redis-py, measured in the same run.

Starts a throwaway ``redis-server`` (or uses ``UWSX_TEST_REDIS_URL``), then runs N concurrent
tasks doing the same operation for a fixed time and prints ops/s and the ratio to raw
redis-py. Never a timed assertion: run it by hand::

    .venv/bin/python bench/redis_throughput.py [--seconds 3] [--tasks 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable

import redis.asyncio

from uwsx_redis import open_backend


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _rate(op: Callable[[int], Awaitable[object]], tasks: int, seconds: float) -> float:
    count = 0
    stop = time.monotonic() + seconds

    async def worker(n: int) -> None:
        nonlocal count
        i = 0
        while time.monotonic() < stop:
            await op(n * 1_000_000 + i)
            i += 1
            count += 1

    await asyncio.gather(*(worker(n) for n in range(tasks)))
    return count / seconds


async def main(url: str, seconds: float, tasks: int) -> None:
    raw = redis.asyncio.Redis.from_url(url)
    piped = await open_backend(url, key_prefix="bench:")
    plain = await open_backend(url, key_prefix="bench:", auto_pipeline=False)
    try:
        rows: list[tuple[str, float]] = []
        rows.append(
            ("raw redis-py INCR", await _rate(lambda i: raw.incr("bench:raw"), tasks, seconds))
        )
        rows.append(
            (
                "uwsx kv.incr (auto-pipelined)",
                await _rate(lambda i: piped.kv.incr("n"), tasks, seconds),
            )
        )
        rows.append(
            (
                "uwsx kv.incr (no pipelining)",
                await _rate(lambda i: plain.kv.incr("n"), tasks, seconds),
            )
        )
        rows.append(
            (
                "uwsx log.append (script)",
                await _rate(
                    lambda i: piped.log.append("b", "e", "{}", max_size=100), tasks, seconds
                ),
            )
        )
        rows.append(
            (
                "uwsx kv.map_put (script)",
                await _rate(
                    lambda i: piped.kv.map_put("m", f"f{i % 50}", "v", ttl=30), tasks, seconds
                ),
            )
        )
        base = rows[0][1]
        print(f"{tasks} concurrent tasks, {seconds:g} s each, {url}")
        for name, rate in rows:
            print(f"  {name:32} {rate:10.0f} ops/s   {rate / base:5.2f}x raw")
    finally:
        await piped.kv.delete_prefix("")
        await piped.log.delete_prefix("")
        await raw.delete("bench:raw")
        await piped.close()
        await plain.close()
        await raw.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tasks", type=int, default=16)
    args = parser.parse_args()
    url = os.environ.get("UWSX_TEST_REDIS_URL", "")
    server = None
    if not url:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("no redis-server on PATH and no UWSX_TEST_REDIS_URL")
        port = _free_port()
        workdir = tempfile.mkdtemp()
        server = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                time.sleep(0.05)
    try:
        asyncio.run(main(url, args.seconds, args.tasks))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=5)
