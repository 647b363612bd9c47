"""Helpers shared by the Redis and Valkey integration tests: opening adapters in the test's own
namespace, and the wire counter that proves one round trip per port operation."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

import uwsx
from tests.integration.redis_servers import RedisDeployment
from uwsx.errors import Unavailable
from uwsx.ports.pubsub import LossWindow
from uwsx_redis import RedisBackend

__all__ = ["Opener", "WireCounter", "open_redis", "restart_scenario", "until", "wire"]

Opener = Callable[..., Awaitable[RedisBackend]]


class WireCounter:
    """Counts request writes on every redis-py connection: one pipeline (or one EVALSHA, or
    a script call followed by WAIT on the same connection) is one write, i.e. one round
    trip. ``by_port`` splits them per server port (cluster nodes)."""

    def __init__(self) -> None:
        self.by_port: Counter[int] = Counter()

    @property
    def sends(self) -> int:
        return sum(self.by_port.values())

    def reset(self) -> None:
        self.by_port.clear()


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> WireCounter:
    counter = WireCounter()
    original = AbstractConnection.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counter.by_port[int(getattr(self, "port", 0) or 0)] += 1
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return counter


@pytest.fixture
async def open_redis(uwsx_key_prefix: str) -> AsyncIterator[Opener]:
    """``await open_redis(url, **options)``: a backend in the test's namespace, cleaned up and
    closed after the test."""
    opened: list[RedisBackend] = []

    async def opener(
        target: object, *, key_prefix: str | None = None, **options: Any
    ) -> RedisBackend:
        prefix = uwsx_key_prefix if key_prefix is None else key_prefix
        backend = await uwsx.connect(target, key_prefix=prefix, **options)
        assert isinstance(backend, RedisBackend)
        opened.append(backend)
        return backend

    try:
        yield opener
    finally:
        for backend in reversed(opened):
            try:
                await backend.kv.delete_prefix("")
                await backend.log.delete_prefix("")
                await backend.stream.delete_prefix("")
            except Exception:  # the server may be gone on purpose (restart tests)
                pass
            await backend.close()


async def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``condition`` (something that cannot be awaited, e.g. a server-side effect) with
    a bounded deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


async def restart_scenario(dep: RedisDeployment, open_redis: Opener) -> None:
    """Kill the server (SIGKILL) and start it again on the same port: calls fail fast and
    honestly while it is down; afterwards the adapter reconnects, every subscription is
    resubscribed and told the loss window, and scripts are reloaded (NOSCRIPT)."""
    backend_losses: list[LossWindow] = []
    backend = await open_redis(
        dep.url,
        socket_timeout=1.0,
        command_timeout=3.0,
        health_interval=0.5,
        on_loss=backend_losses.append,
    )
    kv, ps = backend.kv, backend.pubsub
    received: list[tuple[str, str]] = []
    expired: list[str] = []
    losses: list[LossWindow] = []
    sharded_losses: list[LossWindow] = []
    expiry_losses: list[LossWindow] = []
    sub = await ps.subscribe(["news"], lambda c, m: received.append((c, m)), on_loss=losses.append)
    shard = await ps.subscribe(
        ["{s}news"],
        lambda c, m: received.append((c, m)),
        sharded=True,
        on_loss=sharded_losses.append,
    )
    expiry = await ps.subscribe_expired("k:", expired.append, on_loss=expiry_losses.append)
    assert (await backend.log.append("log", "e", "{}", max_size=10)).seq == 1
    await ps.publish("news", "before")
    await until(lambda: ("news", "before") in received, "the first message")

    dep.kill(0)
    await until(lambda: not sub.healthy and not shard.healthy, "the loss to be noticed")
    await until(lambda: not expiry.healthy, "the expiry connection's loss")
    with pytest.raises(Unavailable):
        await kv.set("k:1", "v")  # refused connections: definitely not applied

    dep.start(0)
    await until(lambda: bool(losses and sharded_losses and expiry_losses), "the loss reports")
    for window in (losses[0], sharded_losses[0], expiry_losses[0]):
        assert window.started <= window.ended
    assert all(s.healthy for s in (sub, shard, expiry)), "healthy again"
    assert backend.stats["pubsub_loss_windows"] >= 3
    assert len(backend_losses) >= 3

    await ps.publish("news", "after")
    await ps.publish("{s}news", "sharded after", sharded=True)
    await kv.set("k:2", "v", ttl=0.05)
    await until(lambda: ("news", "after") in received, "delivery after the restart")
    await until(lambda: ("{s}news", "sharded after") in received, "sharded delivery")
    await until(lambda: "k:2" in expired, "expiry events after the restart")
    # The restarted server lost its data (no persistence) and its script cache.
    resent = backend.stats["resent"]
    assert (await backend.log.append("log", "e", "{}", max_size=10)).seq == 1
    assert backend.stats["resent"] > resent, "the script was reloaded after NOSCRIPT"
