"""Shared helpers of the ``bench/bench_*.py`` scripts (not a benchmark itself).

* :func:`redis_server` / :func:`postgres_server`: a throwaway server for the run (the test
  harness's, which honours ``UWSX_TEST_REDIS_URL`` / ``UWSX_TEST_POSTGRES15_URL``), stopped at
  the end; optionally the server pinned to CPU 0 and this process to CPU 1.
* :func:`rate`: operations per second of N concurrent tasks for a fixed time, repeated, with
  median and IQR; :func:`table` prints rows with a ratio column; :func:`write_results` keeps a
  markdown copy in ``bench/results/`` with the machine and date.

Numbers are wall-clock measurements of one run on whatever else the machine is doing: compare
ratios inside one run, never absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the test harness's server helpers live in tests/
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Rate:
    """Operations per second over ``repeat`` runs."""

    median: float
    q1: float
    q3: float
    runs: tuple[float, ...]

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def pin(cpu: int, pid: int = 0) -> bool:
    """Pin ``pid`` (0: this process) to one CPU when there are at least two."""
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(pid, {cpu})
    except OSError:
        return False
    return True


@contextlib.contextmanager
def redis_server(*, pin_cpus: bool = False) -> Iterator[str]:
    """A throwaway standalone redis-server (no persistence); yields its URL. ``pin_cpus``:
    server on CPU 0, this process on CPU 1 (only worth it on an otherwise idle machine)."""
    from tests.integration.redis_servers import start_deployment

    with tempfile.TemporaryDirectory(prefix="uwsx-bench-") as tmp:
        dep = start_deployment("redis", "standalone", Path(tmp))
        try:
            if pin_cpus:
                for server in dep.servers:
                    pin(0, server.pid)
                pin(1)
            yield dep.url
        finally:
            dep.stop()


@contextlib.contextmanager
def postgres_server() -> Iterator[tuple[str, str]]:
    """A throwaway PostgreSQL 15 (fsync off, as the test harness runs it); yields the URL uwsx
    opens (asyncpg driver) and the plain DSN for raw asyncpg."""
    from tests.integration.pg_servers import find_server

    srv = find_server("15")
    try:
        yield srv.url_for("asyncpg"), srv.url
    finally:
        srv.close()


_PROXY = r"""
import asyncio, sys

async def main(target: int, port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()

    async def pump(reader, writer):
        try:
            while data := await reader.read(65536):
                loop.call_at(loop.time() + delay, writer.write, data)
        except OSError:
            pass
        finally:
            loop.call_at(loop.time() + delay, writer.close)

    async def serve(reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
"""


@contextlib.contextmanager
def delayed(url: str, one_way_ms: float) -> Iterator[str]:
    """``url`` behind a TCP proxy (another process) that delays every chunk by ``one_way_ms``
    in each direction, so a round trip costs ``2 * one_way_ms`` more: a server in another
    rack or zone. Yields the proxied URL (``url`` itself when the delay is 0)."""
    if one_way_ms <= 0:
        yield url
        return
    import subprocess
    from urllib.parse import urlsplit, urlunsplit

    from tests.integration.harness import free_port

    parts = urlsplit(url)
    port = free_port()
    argv = [sys.executable, "-c", _PROXY, str(parts.port), str(port), str(one_way_ms / 1000)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready"
        yield urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))
    finally:
        proc.terminate()
        proc.wait(timeout=5)


async def rate(
    op: Callable[[int], Awaitable[object]],
    *,
    tasks: int,
    seconds: float,
    repeat: int = 3,
    warmup: float = 0.2,
) -> Rate:
    """Run ``op(i)`` in ``tasks`` concurrent loops for ``seconds``, ``repeat`` times (after a
    ``warmup``), and report completed operations per second."""
    await run_once(op, tasks=tasks, seconds=warmup)
    runs = tuple([(await run_once(op, tasks=tasks, seconds=seconds))[0] for _ in range(repeat)])
    return summarize(runs)


async def run_once(
    op: Callable[[int], Awaitable[object]], *, tasks: int, seconds: float
) -> tuple[float, float]:
    """Run ``op(i)`` in ``tasks`` concurrent loops for ``seconds``: operations per second, and
    client CPU seconds per operation."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        nonlocal done
        i = n
        while time.perf_counter() < stop:
            await op(i)
            i += tasks
            done += 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(n) for n in range(tasks)))
    return done / (time.perf_counter() - started), (time.process_time() - cpu) / max(1, done)


def summarize(runs: tuple[float, ...]) -> Rate:
    if len(runs) >= 2:
        q1, _, q3 = statistics.quantiles(runs, n=4, method="inclusive")
    else:
        q1 = q3 = runs[0]
    return Rate(statistics.median(runs), q1, q3, runs)


def machine() -> str:
    """One line naming the machine, the interpreter and the load while measuring."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} x {cpu}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, load average {load[0]:.1f}"
    )


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (also readable as plain text)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([f"### {title}", "", line, rule, *body, ""])


def fmt_rate(r: Rate) -> str:
    return f"{r.median:,.0f} (IQR {r.iqr:,.0f})"


def write_results(
    name: str, title: str, sections: list[str], notes: str, *, command: str = ""
) -> Path:
    """Write ``bench/results/<name>.md``: the machine, the date, the command (default
    ``python bench/<name>.py --write``), the tables, the notes."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join(
        [
            f"# {title}",
            "",
            f"Machine: {machine()}.  ",
            f"Date: {stamp}.  ",
            f"Command: `{command or f'python bench/{name}.py --write'}`",
            "",
            *sections,
            notes.strip(),
            "",
        ]
    )
    path.write_text(text)
    return path


if __name__ == "__main__":
    print(__doc__)


def redis_main(
    name: str,
    title: str,
    doc: str,
    notes: str,
    measure: Callable[[str, float, int], Coroutine[Any, Any, list[str]]],
) -> None:
    """The command line of a Redis throughput benchmark: ``--seconds``, ``--repeat``,
    ``--write`` (to ``bench/results/<name>.md``) and ``--pin``; runs ``measure(url, seconds,
    repeat)`` against a throwaway redis-server and prints its sections."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update bench/results/")
    parser.add_argument("--pin", action="store_true", help="server on CPU 0, client on CPU 1")
    args = parser.parse_args()
    with redis_server(pin_cpus=args.pin) as url:
        print(f"redis at {url}; {machine()}\n", flush=True)
        sections: list[str] = asyncio.run(measure(url, args.seconds, args.repeat))
    if args.write:
        print(f"wrote {write_results(name, title, sections, notes)}")
