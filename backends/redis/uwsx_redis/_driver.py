"""Connections to one server or a cluster: URL schemes, explicit timeouts, no blind retries.

redis-py's own retry layer resends a command (or a whole pipeline) after a connection error or
a read timeout, which can apply an ``INCR`` or a script twice. The adapter therefore never lets
redis-py retry anything that was sent: connections are built with a zero-retry policy and the
executor (:mod:`uwsx_redis._driver_exec`) decides what may be resent (only what provably did
not run: a refused connection, ``NOSCRIPT``, ``MOVED``/``ASK``, ``TRYAGAIN``, ``LOADING``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from uwsx_redis._driver_nodes import ClusterNodeRef, Node, PoolNode, dropping

__all__ = [
    "SCHEMES",
    "ClusterTopology",
    "DriverOptions",
    "Node",
    "StandaloneTopology",
    "Topology",
    "open_topology",
]

#: uwsx scheme -> (redis-py scheme, cluster?)
SCHEMES: dict[str, tuple[str, bool]] = {
    "redis": ("redis", False),
    "rediss": ("rediss", False),
    "redis+cluster": ("redis", True),
    "rediss+cluster": ("rediss", True),
    "valkey": ("redis", False),
    "valkeys": ("rediss", False),
    "valkey+cluster": ("redis", True),
    "valkeys+cluster": ("rediss", True),
}


@dataclass(frozen=True, slots=True)
class DriverOptions:
    """Timeouts and limits; every port call has a deadline (``command_timeout``).

    :param socket_timeout: longest wait for one reply or one write on a socket.
    :param connect_timeout: longest wait to open a TCP connection (and handshake).
    :param command_timeout: deadline of a whole port operation, queueing and retries of
        unsent commands included.
    :param connect_attempts: attempts to reach a server per operation (a command is never
        resent once it may have reached the server).
    :param max_connections: connections per server in the command pool.
    :param max_batch: most operations per auto-pipelined batch; the rest of a server's
        queue waits for the next pipeline.
    :param auto_pipeline: coalesce the operations of one event-loop tick into one pipeline
        per server, and hold those issued while that server's pipeline awaits its replies
        for the next one.
    :param health_interval: a pub/sub connection idle this long is PINGed; no answer within
        ``socket_timeout`` counts as a lost connection.
    """

    socket_timeout: float = 5.0
    connect_timeout: float = 2.0
    command_timeout: float = 10.0
    connect_attempts: int = 3
    max_connections: int = 64
    max_batch: int = 512
    auto_pipeline: bool = True
    health_interval: float = 5.0

    def connection_kwargs(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": False,
            "health_check_interval": 0,
            "socket_keepalive": True,
            # The adapter parses raw replies; RESP3 would turn some of them into maps and
            # pub/sub messages into push frames.
            "protocol": 2,
        }


#: Connection settings taken over from a client passed in (address, credentials, TLS).
_CLIENT_KEYS = (
    "host",
    "port",
    "db",
    "username",
    "password",
    "credential_provider",
    "client_name",
    "path",
)
_SSL_PREFIX = "ssl_"


class Topology:
    """Where commands go: one node (standalone) or the node owning a key's slot (cluster)."""

    cluster: bool = False

    def node_for(self, key: str | bytes | None) -> Node:
        raise NotImplementedError

    def default(self) -> Node:
        raise NotImplementedError

    def primaries(self) -> list[Node]:
        raise NotImplementedError

    def keyslot(self, key: str) -> int:
        return 0

    def node_at(self, host: str, port: int) -> Node | None:
        """The known node at ``host:port`` (ASK redirections), if any."""
        return None

    async def refresh(self) -> None:
        """Re-read the slot map after MOVED / a failed node (no-op standalone)."""

    async def close(self) -> None:
        raise NotImplementedError


class StandaloneTopology(Topology):
    def __init__(self, pool: ConnectionPool, *, owned: bool) -> None:
        kwargs = pool.connection_kwargs
        pool.connection_class = dropping(pool.connection_class)
        self._node = PoolNode(f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}", pool)
        self._owned = owned
        self.db = int(kwargs.get("db", 0) or 0)

    def node_for(self, key: str | bytes | None) -> Node:
        return self._node

    def default(self) -> Node:
        return self._node

    def primaries(self) -> list[Node]:
        return [self._node]

    async def close(self) -> None:
        if self._owned:
            await self._node.pool.aclose()


class ClusterTopology(Topology):
    cluster = True
    db = 0

    def __init__(self, client: RedisCluster, *, owned: bool) -> None:
        self.client = client
        self._owned = owned
        self._nodes: dict[str, ClusterNodeRef] = {}

    def _wrap(self, node: ClusterNode) -> ClusterNodeRef:
        wrapped = self._nodes.get(node.name)
        if wrapped is None or wrapped.node is not node:
            wrapped = self._nodes[node.name] = ClusterNodeRef(node)
        return wrapped

    def keyslot(self, key: str) -> int:
        return int(self.client.keyslot(key))

    def node_for(self, key: str | bytes | None) -> Node:
        if key is None:
            return self.default()
        slot = self.client.keyslot(key)
        return self._wrap(self.client.nodes_manager.get_node_from_slot(slot))

    def node_at(self, host: str, port: int) -> Node | None:
        node = self.client.nodes_manager.get_node(host=host, port=port)
        return None if node is None else self._wrap(node)

    def default(self) -> Node:
        node: ClusterNode | None = self.client.nodes_manager.default_node
        return self._wrap(node if node is not None else self.client.get_primaries()[0])

    def primaries(self) -> list[Node]:
        return [self._wrap(n) for n in self.client.get_primaries()]

    async def refresh(self) -> None:
        await self.client.nodes_manager.initialize()

    async def close(self) -> None:
        if self._owned:
            await self.client.aclose()


def split_url(url: str) -> tuple[str, bool]:
    """``(redis-py URL, cluster?)`` for a uwsx URL; ``ValueError`` for another scheme."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"not a Redis/Valkey URL scheme: {scheme!r}")
    driver_scheme, cluster = SCHEMES[scheme]
    return urlunsplit((driver_scheme, *parts[1:])), cluster


def _borrowed(kwargs: Mapping[str, Any], options: DriverOptions) -> dict[str, Any]:
    """Another client's address, credentials and TLS settings with our timeouts/protocol."""
    out = {k: v for k, v in kwargs.items() if k in _CLIENT_KEYS or k.startswith(_SSL_PREFIX)}
    out.update(options.connection_kwargs())
    return out


async def open_topology(target: object, options: DriverOptions) -> Topology:
    """Build the topology for a URL or an existing redis-py client.

    A client passed in lends its address, credentials and TLS settings; the adapter opens its
    own connections (RESP2, its own timeouts, no driver retries) and leaves the client alone.
    """
    if isinstance(target, RedisCluster):
        default = target.get_default_node() or target.get_nodes()[0]
        kwargs = _borrowed(target.connection_kwargs, options)
        kwargs.pop("host", None)
        kwargs.pop("port", None)
        kwargs.pop("db", None)
        kwargs.pop("path", None)
        ssl = target.connection_kwargs.get("connection_class") is SSLConnection
        return await _cluster(
            RedisCluster(
                host=default.host,
                port=default.port,
                ssl=ssl,
                max_connections=options.max_connections,
                **kwargs,
            ),
            options,
        )
    if isinstance(target, Redis):
        source = target.connection_pool
        pool = BlockingConnectionPool(
            connection_class=source.connection_class,
            max_connections=options.max_connections,
            timeout=options.command_timeout,
            **_borrowed(source.connection_kwargs, options),
        )
        return StandaloneTopology(pool, owned=True)
    if not isinstance(target, str):
        raise TypeError(
            "the Redis backend opens redis://, rediss://, redis+cluster://, valkey://, "
            f"valkeys://, valkey+cluster:// URLs or redis-py asyncio clients, not {target!r}"
        )
    driver_url, cluster = split_url(target)
    kwargs = options.connection_kwargs()
    if cluster:
        parsed = dict(parse_url(driver_url))
        parsed.pop("connection_class", None)
        ssl = urlsplit(driver_url).scheme == "rediss"
        client = cast(Any, RedisCluster)(
            **parsed,
            **kwargs,
            ssl=ssl,
            max_connections=options.max_connections,
            require_full_coverage=True,
        )
        return await _cluster(client, options)
    pool = BlockingConnectionPool.from_url(
        driver_url,
        max_connections=options.max_connections,
        timeout=options.command_timeout,
        **kwargs,
    )
    return StandaloneTopology(pool, owned=True)


async def _cluster(client: RedisCluster, options: DriverOptions) -> ClusterTopology:
    # Every node, the ones found later included, makes its connections from these settings.
    manager = client.nodes_manager
    kwargs = manager.connection_kwargs
    kwargs["connection_class"] = dropping(kwargs.get("connection_class", Connection))
    for node in manager.startup_nodes.values():
        node.connection_class = dropping(node.connection_class)
    try:
        await client.initialize()
    except BaseException:
        with contextlib.suppress(Exception):
            await client.aclose()
        raise
    return ClusterTopology(client, owned=True)
