"""``RedisBackend`` and the factory registered for ``redis://`` (and reused for ``valkey://``).

Opening a backend reads the server's facts (``INFO server``/``replication`` on every primary,
``notify-keyspace-events``), derives the capabilities from them, and loads every Lua script
on every primary, so normal operation never meets ``NOSCRIPT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Self

from redis.exceptions import RedisError

from uwsx.errors import BackendError, Unavailable, UnsupportedBackendError
from uwsx.ports.backend import Capability
from uwsx.ports.pubsub import LossHandler
from uwsx.redact import redact_url
from uwsx_redis._caps import ServerFacts, capabilities, parse_info
from uwsx_redis._context import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    Context,
    text,
)
from uwsx_redis._driver import DriverOptions, Topology, open_topology
from uwsx_redis._driver_exec import Executor, Op
from uwsx_redis._keys import Keyspace
from uwsx_redis._scripts import ALL_SCRIPTS, script
from uwsx_redis.functions import RedisFunctions
from uwsx_redis.kv import RedisKV
from uwsx_redis.locks import RedisLocks
from uwsx_redis.logs import RedisSortedLog, RedisStream
from uwsx_redis.pubsub import RedisPubSub
from uwsx_redis.queue import RedisQueue

__all__ = ["RedisBackend", "open_backend"]

log = logging.getLogger("uwsx.redis")

_DRIVER_FIELDS = {f for f in DriverOptions.__dataclass_fields__}


class RedisBackend:
    """All six ports over one Redis / Valkey deployment (standalone or cluster)."""

    def __init__(
        self,
        *,
        name: str,
        url: str,
        key_prefix: str,
        ctx: Context,
        facts: ServerFacts,
        caps: frozenset[Capability],
        options: DriverOptions,
        on_loss: LossHandler | None,
    ) -> None:
        self._name = name
        self._url = url
        self._prefix = key_prefix
        self._ctx = ctx
        self.facts = facts
        self._caps = caps
        self._kv = RedisKV(ctx)
        self._log = RedisSortedLog(ctx, caps)
        self._stream = RedisStream(ctx, caps)
        self._pubsub = RedisPubSub(ctx, caps, options, on_loss=on_loss)
        self._locks = RedisLocks(ctx)
        self._queue = RedisQueue(ctx)
        self._functions = RedisFunctions(ctx) if Capability.SERVER_FUNCTIONS in caps else None
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def url(self) -> str:
        return self._url

    @property
    def key_prefix(self) -> str:
        return self._prefix

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._caps

    @property
    def info(self) -> Mapping[str, str]:
        f = self.facts
        return {
            "server": f.flavor,
            "version": f.version_text,
            "mode": f.mode,
            "primaries": str(f.primaries),
            "replicas": str(f.min_replicas),
            "field_expiry": "native" if self._ctx.field_mode == "n" else "lazy",
            "keyspace_events": f.keyspace_events or "",
        }

    @property
    def stats(self) -> Mapping[str, int]:
        """Executor counters (round trips, resent, indeterminate...) and pub/sub loss windows."""
        return {**self._ctx.executor.stats, "pubsub_loss_windows": self._pubsub.loss_windows}

    @property
    def topology(self) -> Topology:
        return self._ctx.topology

    @property
    def kv(self) -> RedisKV:
        return self._kv

    @property
    def log(self) -> RedisSortedLog:
        return self._log

    @property
    def stream(self) -> RedisStream:
        return self._stream

    @property
    def pubsub(self) -> RedisPubSub:
        return self._pubsub

    @property
    def locks(self) -> RedisLocks:
        return self._locks

    @property
    def queue(self) -> RedisQueue:
        return self._queue

    @property
    def functions(self) -> RedisFunctions | None:
        return self._functions

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._pubsub.close()
        await self._ctx.executor.close()
        await self._ctx.topology.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _detect(executor: Executor, topology: Topology) -> ServerFacts:
    probes = [
        Op(
            [
                ("INFO", "server"),
                ("INFO", "replication"),
                ("CONFIG", "GET", "notify-keyspace-events"),
            ],
            node=node,
            readonly=True,
            tolerate=True,
        )
        for node in topology.primaries()
    ]
    replies = await executor.run_all(probes)
    for reply in replies:
        for part in reply[:2]:
            if isinstance(part, BaseException):
                raise BackendError(f"cannot read server facts (INFO): {part}")
    notify: str | None = None
    config = replies[0][2]
    if not isinstance(config, BaseException) and len(config) >= 2:
        notify = text(config[1])
    return ServerFacts.from_info(
        parse_info(text(replies[0][0])),
        [parse_info(text(r[1])) for r in replies],
        cluster=topology.cluster,
        keyspace_events=notify,
    )


async def _enable_keyspace_events(executor: Executor, topology: Topology, current: str) -> str:
    flags = "".join(dict.fromkeys(current + "Ex"))
    ops = [
        Op([("CONFIG", "SET", "notify-keyspace-events", flags)], node=n)
        for n in topology.primaries()
    ]
    await executor.run_all(ops)
    return flags


async def _prepare(
    executor: Executor, topology: Topology, field_expiry: str, enable_keyspace_events: bool
) -> tuple[ServerFacts, str]:
    """Read the server's facts, pick the map expiry mode and load every script."""
    facts = await _detect(executor, topology)
    if enable_keyspace_events and not facts.expiry_events:
        flags = await _enable_keyspace_events(executor, topology, facts.keyspace_events or "")
        facts = replace(facts, keyspace_events=flags)
    if field_expiry == "native" and not facts.field_ttl:
        raise UnsupportedBackendError(
            f"field_expiry='native' needs per-field hash TTL ({facts.flavor} "
            f"{facts.version_text} has none); use 'auto' or 'lazy'"
        )
    native = field_expiry == "native" or (field_expiry == "auto" and facts.field_ttl)
    sources = [script(name) for name in ALL_SCRIPTS]
    try:
        await asyncio.gather(*(executor.load_scripts(n, sources) for n in topology.primaries()))
    except (RedisError, OSError) as exc:
        raise Unavailable(f"cannot load the adapter's scripts: {exc}") from exc
    return facts, "n" if native else "l"


def _split_options(options: dict[str, Any]) -> tuple[DriverOptions, dict[str, Any]]:
    driver = {k: options.pop(k) for k in list(options) if k in _DRIVER_FIELDS}
    return DriverOptions(**driver), options


async def open_backend(
    target: object,
    *,
    key_prefix: str = "",
    backend_name: str = "redis",
    field_expiry: str = "auto",
    replica_wait: bool | None = None,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    enable_keyspace_events: bool = False,
    on_loss: LossHandler | None = None,
    **options: Any,
) -> RedisBackend:
    """Open a Redis / Valkey backend from a URL or an existing redis-py asyncio client.

    :param target: ``redis://``, ``rediss://``, ``redis+cluster://`` (and the ``valkey``
        spellings) or a ``redis.asyncio.Redis`` / ``RedisCluster`` (left open on close).
    :param key_prefix: prefix of every key and channel (no braces).
    :param field_expiry: ``"auto"`` (native per-field TTL where the server has it),
        ``"native"`` or ``"lazy"`` (deadline in the value, swept by scripts: any server).
    :param replica_wait: force the ``replica_wait`` capability on (replicas attach later) or
        off; default: offered when every primary has a replica.
    :param max_value_bytes: larger values are refused (BackendError) before sending.
    :param max_message_bytes: larger pub/sub messages are refused (ValueError) before sending.
    :param enable_keyspace_events: ``CONFIG SET notify-keyspace-events`` to add ``Ex``.
    :param on_loss: called with every pub/sub loss window (metrics, alerts).
    :param options: :class:`~uwsx_redis._driver.DriverOptions` fields (timeouts, pool size,
        ``auto_pipeline``...).
    :raises Unavailable: the server cannot be reached.
    """
    if not isinstance(key_prefix, str) or "{" in key_prefix or "}" in key_prefix:
        raise ValueError("key_prefix must be a str without '{' or '}'")
    if field_expiry not in ("auto", "native", "lazy"):
        raise ValueError(f"field_expiry must be 'auto', 'native' or 'lazy', got {field_expiry!r}")
    driver, rest = _split_options(dict(options))
    if rest:
        raise TypeError(f"unexpected options for the {backend_name} backend: {sorted(rest)}")
    try:
        topology = await open_topology(target, driver)
    except (TypeError, ValueError):
        raise
    except Exception as exc:
        raise Unavailable(f"cannot connect to {redact_url(target)}: {exc}") from exc
    executor = Executor(topology, driver)
    try:
        facts, mode = await _prepare(executor, topology, field_expiry, enable_keyspace_events)
    except BaseException:
        with contextlib.suppress(Exception):
            await executor.close()
            await topology.close()
        raise
    caps = capabilities(facts, replica_wait=replica_wait)
    ctx = Context(
        executor, Keyspace(key_prefix), topology, mode, max_value_bytes, max_message_bytes
    )
    url = redact_url(target) if isinstance(target, str) else f"<{type(target).__name__} client>"
    return RedisBackend(
        name=backend_name,
        url=url,
        key_prefix=key_prefix,
        ctx=ctx,
        facts=facts,
        caps=caps,
        options=driver,
        on_loss=on_loss,
    )
