"""A TCP relay in front of a real PostgreSQL server: it counts what clients send and can
freeze connections.

Freezing models a peer that stops answering on a connection it has (a stuck backend, a
half-open TCP connection after a partition) while new connections still get through: bytes in
flight are held, nothing more is forwarded either way, and the client sees neither data nor
EOF. That is the state in which a driver waits for the answer to a cancelled statement.

Counting reads the frontend protocol: every simple ``Query`` and every ``Sync`` (the end of an
extended-protocol batch) is one request the client then waits on, so their number is the
number of round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Pipe", "Relay", "relay_to"]

#: Untyped requests a client may send before its startup message (TLS, GSS encryption).
_PRE_STARTUP = (80877103, 80877104)


class Pipe:
    """One client connection and its connection to the server."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.sent: Counter[str] = Counter()
        self._thawed = asyncio.Event()
        self._thawed.set()
        #: Set once a frozen connection holds bytes the client sent.
        self.holding = asyncio.Event()
        self._buffer = bytearray()
        self._typed = False
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def open(self) -> bool:
        return not self.client.is_closing()

    @property
    def frozen(self) -> bool:
        return not self._thawed.is_set()

    @property
    def round_trips(self) -> int:
        return self.sent["Q"] + self.sent["S"]

    def freeze(self) -> None:
        self._thawed.clear()

    def _count(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while True:
            if not self._typed:
                if len(buf) < 8 or len(buf) < int.from_bytes(buf[:4], "big"):
                    return
                code = int.from_bytes(buf[4:8], "big")
                del buf[: int.from_bytes(buf[:4], "big")]
                self._typed = code not in _PRE_STARTUP
                continue
            if len(buf) < 5 or len(buf) < 1 + int.from_bytes(buf[1:5], "big"):
                return
            self.sent[chr(buf[0])] += 1
            del buf[: 1 + int.from_bytes(buf[1:5], "big")]

    async def pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, outbound: bool
    ) -> None:
        try:
            while data := await source.read(65536):
                if outbound and self.frozen:
                    self.holding.set()
                await self._thawed.wait()
                if outbound:
                    self._count(data)
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not self.frozen:
                self.close()

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            writer.close()


class Relay:
    """Forwards connections to ``127.0.0.1:<port>`` to the server; see the module docstring."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.pipes: list[Pipe] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        pipe = Pipe(writer, up_writer)
        self.pipes.append(pipe)
        pipe.tasks = [
            asyncio.ensure_future(pipe.pump(reader, up_writer, outbound=True)),
            asyncio.ensure_future(pipe.pump(up_reader, writer, outbound=False)),
        ]

    @property
    def round_trips(self) -> int:
        """Requests sent so far over every connection."""
        return sum(p.round_trips for p in self.pipes)

    def open_pipes(self) -> list[Pipe]:
        return [p for p in self.pipes if p.open]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in self.pipes:
            pipe.close()
            for task in pipe.tasks:
                task.cancel()
        await asyncio.gather(*(t for p in self.pipes for t in p.tasks), return_exceptions=True)
        for pipe in self.pipes:
            for writer in (pipe.client, pipe.upstream):
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def relay_to(url: str) -> AsyncIterator[tuple[Relay, str]]:
    """A started :class:`Relay` to the server of ``url``, and ``url`` rewritten to go through
    it with TLS off (so the relay sees protocol messages)."""
    parts = urlsplit(url)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 5432)
    await relay.start()
    auth, _, _ = parts.netloc.rpartition("@")
    netloc = f"{auth}@127.0.0.1:{relay.port}" if auth else f"127.0.0.1:{relay.port}"
    query = "&".join(q for q in (parts.query, "sslmode=disable") if q)
    try:
        yield relay, urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    finally:
        await relay.aclose()
