"""The adapter as a whole on a standalone server: capabilities read from the server, URL
schemes and passed-in clients, script reloading and server functions."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import redis.asyncio

import uwsx
from tests.integration.redis.support import Opener
from tests.integration.redis_servers import RedisDeployment, throwaway
from uwsx.errors import BackendError, UnsupportedBackendError
from uwsx.plugins import get_registry
from uwsx.ports.backend import Capability
from uwsx_redis._caps import parse_version
from uwsx_redis._driver import split_url


async def test_capabilities_come_from_the_server(
    redis_standalone: RedisDeployment, open_redis: Opener
) -> None:
    backend = await open_redis(redis_standalone.url)
    info = backend.info
    assert backend.name == "redis"
    assert info["server"] == "redis"
    assert info["mode"] == "standalone"
    version = parse_version(info["version"])
    assert version >= (7, 0, 0)
    assert info["field_expiry"] == ("native" if version >= (7, 4, 0) else "lazy")
    assert {
        Capability.SHARDED_PUBSUB,
        Capability.SERVER_FUNCTIONS,
        Capability.KEY_EXPIRY_EVENTS,
        Capability.DURABLE,
    } <= backend.capabilities
    assert Capability.REPLICA_WAIT not in backend.capabilities, "no replica is attached"
    assert Capability.SESSION_LOCKS not in backend.capabilities
    with pytest.raises(UnsupportedBackendError):
        await backend.locks.try_session_lock("k")
    with pytest.raises(UnsupportedBackendError, match="replica_wait"):
        await backend.log.append("l", "e", "{}", max_size=5, replicas=(1, 0.1))


async def test_replica_wait_can_be_declared_for_replicas_that_attach_later(
    redis_standalone: RedisDeployment, open_redis: Opener
) -> None:
    backend = await open_redis(redis_standalone.url, replica_wait=True)
    assert Capability.REPLICA_WAIT in backend.capabilities
    appended = await backend.log.append("l", "e", "{}", max_size=5, replicas=(1, 0.05))
    assert (appended.seq, appended.replicas) == (1, 0), "WAIT timed out: no replica acked"


async def test_key_expiry_events_follow_the_server_config(
    tmp_path: Path, open_redis: Opener
) -> None:
    with throwaway("redis", "standalone", tmp_path) as dep:
        dep.client().config_set("notify-keyspace-events", "")
        plain = await open_redis(dep.url)
        assert Capability.KEY_EXPIRY_EVENTS not in plain.capabilities
        with pytest.raises(UnsupportedBackendError, match="key_expiry_events"):
            await plain.pubsub.subscribe_expired("k:", lambda key: None)
        enabled = await open_redis(dep.url, enable_keyspace_events=True)
        assert Capability.KEY_EXPIRY_EVENTS in enabled.capabilities
        flags = str(dep.client().config_get("notify-keyspace-events")["notify-keyspace-events"])
        assert "E" in flags
        assert "x" in flags


async def test_every_scheme_maps_to_the_driver() -> None:
    for scheme, (driver, cluster) in {
        "redis": ("redis", False),
        "rediss": ("rediss", False),
        "redis+cluster": ("redis", True),
        "rediss+cluster": ("rediss", True),
        "valkey": ("redis", False),
        "valkeys": ("rediss", False),
        "valkey+cluster": ("redis", True),
        "valkeys+cluster": ("rediss", True),
    }.items():
        url, is_cluster = split_url(f"{scheme}://user:pw@h:1/0")
        assert url == f"{driver}://user:pw@h:1/0"
        assert is_cluster is cluster
        spec = get_registry().for_scheme(scheme)
        assert spec.name == ("valkey" if scheme.startswith("valkey") else "redis")


async def test_bad_prefix_and_options_are_refused(redis_standalone: RedisDeployment) -> None:
    with pytest.raises(ValueError, match="key_prefix"):
        await uwsx.connect(redis_standalone.url, key_prefix="{tag}")
    with pytest.raises(TypeError, match="unexpected options"):
        await uwsx.connect(redis_standalone.url, no_such_option=1)
    with pytest.raises(ValueError, match="field_expiry"):
        await uwsx.connect(redis_standalone.url, field_expiry="sometimes")


async def test_credentials_are_redacted(tmp_path: Path, open_redis: Opener) -> None:
    with throwaway("redis", "standalone", tmp_path) as dep:
        dep.client().config_set("requirepass", "s3cret")
        url = dep.url.replace("redis://", "redis://:s3cret@")
        backend = await open_redis(url)
        assert "s3cret" not in backend.url
        await backend.kv.set("k", "v")
        assert await backend.kv.get("k") == "v"


async def test_valkey_scheme_on_a_redis_server_warns(
    redis_standalone: RedisDeployment, open_redis: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    url = redis_standalone.url.replace("redis://", "valkey://")
    with caplog.at_level(logging.WARNING, logger="uwsx.valkey"):
        backend = await open_redis(url)
    assert backend.name == "valkey"
    assert backend.info["server"] == "redis"
    assert "not Valkey" in caplog.text
    await backend.kv.set("k", "v")
    assert await backend.kv.get("k") == "v"


async def test_an_existing_client_lends_its_settings(
    redis_standalone: RedisDeployment, open_redis: Opener
) -> None:
    client = redis.asyncio.Redis.from_url(redis_standalone.url, decode_responses=True)
    try:
        backend = await open_redis(client)
        assert backend.url == "<Redis client>"
        await backend.kv.set("shared", "v")
        assert await backend.kv.get("shared") == "v"
        got: list[str] = []
        await backend.pubsub.subscribe(["c"], lambda c, m: got.append(m))
        await backend.pubsub.publish("c", "m")
        await backend.close()
        assert await client.get(backend.key_prefix + "shared") == "v", "the client stays open"
    finally:
        await client.aclose()


async def test_flushed_scripts_are_reloaded(
    redis_standalone: RedisDeployment, open_redis: Opener
) -> None:
    backend = await open_redis(redis_standalone.url)
    assert (await backend.log.append("l", "e", "{}", max_size=5)).seq == 1
    redis_standalone.client().script_flush()
    resent = backend.stats["resent"]
    assert (await backend.log.append("l", "e", "{}", max_size=5)).seq == 2
    assert await backend.kv.map_put("m", "f", "v") == 0
    assert backend.stats["resent"] > resent


LIBRARY = """#!lua name={name}
redis.register_function('{name}_incr', function(keys, args)
  return redis.call('INCRBY', keys[1], args[1])
end)
redis.register_function('{name}_fail', function(keys, args)
  return redis.error_reply('nope')
end)
"""


async def test_server_functions(redis_standalone: RedisDeployment, open_redis: Opener) -> None:
    backend = await open_redis(redis_standalone.url)
    functions = backend.functions
    assert functions is not None
    name = "uwsx_test_" + backend.key_prefix.strip(":").replace("-", "_")
    code = LIBRARY.format(name=name)
    try:
        assert await functions.load(code) == name
        with pytest.raises(BackendError, match="already exists"):
            await functions.load(code)
        assert await functions.load(code, replace=True) == name
        assert name in await functions.list()
        assert await functions.call(f"{name}_incr", keys=["n"], args=[5]) == 5
        assert await backend.kv.get("n") == "5", "function keys get the key prefix"
        with pytest.raises(BackendError, match="nope"):
            await functions.call(f"{name}_fail")
        with pytest.raises(ValueError, match="shebang"):
            await functions.load("return 1")
    finally:
        assert await functions.delete(name) is True
    assert await functions.delete(name) is False
    assert name not in await functions.list()


def test_probe_command_shows_detected_capabilities(
    redis_standalone: RedisDeployment, capsys: pytest.CaptureFixture[str]
) -> None:
    from uwsx.cli import main

    assert main(["redis-probe", redis_standalone.url, "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["backend"] == "redis"
    assert facts["info"]["server"] == "redis"
    assert "sharded_pubsub" in facts["capabilities"]
    assert main(["redis-probe", "redis://127.0.0.1:1", "--timeout", "0.5"]) == 1
