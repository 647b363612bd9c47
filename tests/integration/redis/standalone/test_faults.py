"""Bad input and faults: oversized values, a value of the wrong kind under a key, a server that
is absent, frozen or refusing a request. Each ends in a clear uwsx error within the deadline,
never a hung call, and the adapter keeps working afterwards."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import uwsx
from tests.integration.harness import free_port
from tests.integration.redis.support import Opener, WireCounter
from tests.integration.redis_servers import RedisDeployment, throwaway
from uwsx.errors import BackendError, Indeterminate, Unavailable


async def test_oversized_values_are_refused_before_sending(
    redis_standalone: RedisDeployment, open_redis: Opener, wire: WireCounter
) -> None:
    backend = await open_redis(redis_standalone.url, max_value_bytes=1000)
    kv = backend.kv
    await kv.get("warm-up")
    wire.reset()
    big = "x" * 1001
    with pytest.raises(BackendError, match="larger than the backend accepts"):
        await kv.set("big", big)
    with pytest.raises(BackendError, match="larger"):
        await kv.map_put("m", "f", big)
    with pytest.raises(BackendError, match="larger"):
        await backend.log.append("l", "e", big, max_size=5)
    with pytest.raises(BackendError, match="larger"):
        await backend.stream.append("s", "e", big, max_size=5)
    with pytest.raises(BackendError, match="larger"):
        await kv.set("multibyte", "é" * 501)  # 501 characters, 1002 bytes
    assert wire.sends == 0, "nothing was sent"
    await kv.set("fits", "x" * 1000)
    assert await kv.get("big") is None


async def test_server_refusing_a_request_is_a_clear_error(
    tmp_path: Path, open_redis: Opener
) -> None:
    with throwaway("redis", "standalone", tmp_path) as dep:
        dep.client().config_set("proto-max-bulk-len", "1mb")
        kv = (await open_redis(dep.url)).kv
        with pytest.raises(BackendError) as caught:
            await kv.set("huge", "x" * (2 * 1024 * 1024))
        # The server answers with a protocol error (or drops the connection mid-write).
        assert isinstance(caught.value, BackendError)
        await kv.set("small", "ok")
        assert await kv.get("small") == "ok"
        assert await kv.get("huge") is None


async def test_wrong_kind_of_value_is_a_backend_error(
    redis_standalone: RedisDeployment, open_redis: Opener
) -> None:
    kv = (await open_redis(redis_standalone.url)).kv
    await kv.set("s", "text")
    await kv.map_put("m", "f", "v")
    with pytest.raises(BackendError, match="WRONGTYPE"):
        await kv.map_put("s", "f", "v")
    with pytest.raises(BackendError, match="WRONGTYPE"):
        await kv.get("m")
    with pytest.raises(BackendError, match="WRONGTYPE"):
        await kv.bucket_take("s", capacity=1, interval=1.0)
    with pytest.raises(BackendError, match="not an integer"):
        await kv.incr("s")
    assert await kv.get("s") == "text", "failed operations changed nothing"


async def test_absent_server_is_unavailable_at_once() -> None:
    port = free_port()
    with pytest.raises(Unavailable):
        await uwsx.connect(f"redis://127.0.0.1:{port}", connect_timeout=0.5)
    with pytest.raises(Unavailable):
        await uwsx.connect(f"redis+cluster://127.0.0.1:{port}", connect_timeout=0.5)


async def test_server_that_goes_away_is_unavailable(tmp_path: Path, open_redis: Opener) -> None:
    with throwaway("redis", "standalone", tmp_path) as dep:
        kv = (await open_redis(dep.url, command_timeout=2.0)).kv
        await kv.set("a", "1")
        dep.kill(0)
        with pytest.raises(Unavailable):
            await kv.set("a", "2")
        with pytest.raises(Unavailable):
            await kv.get("a")


async def test_frozen_server_costs_a_deadline_not_a_hang(
    tmp_path: Path, open_redis: Opener
) -> None:
    with throwaway("redis", "standalone", tmp_path) as dep:
        kv = (await open_redis(dep.url, socket_timeout=0.3, command_timeout=1.0)).kv
        await kv.set("a", "1")
        pid = dep.servers[0].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(Indeterminate, match="may have been applied"):
                await kv.set("a", "2")  # written to the socket, never answered
            with pytest.raises(Unavailable):
                await kv.get("a")  # a read that may have run is still safe to retry
            with pytest.raises(BackendError):
                await kv.incr("n")  # no connection handshake completes: not sent
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await kv.get("a") in ("1", "2")
        assert await kv.incr("n") == 1


async def test_foreign_bytes_under_a_key_are_a_backend_error(
    redis_standalone: RedisDeployment, open_redis: Opener
) -> None:
    kv = (await open_redis(redis_standalone.url)).kv
    redis_standalone.client().set(kv_key(kv, "raw"), b"\xff\xfe")
    with pytest.raises(BackendError, match="UTF-8"):
        await kv.get("raw")
    await kv.set("raw", "fixed")
    assert await kv.get("raw") == "fixed"


def kv_key(kv: object, key: str) -> str:
    prefix: str = kv._keys.prefix  # type: ignore[attr-defined]
    return prefix + key
