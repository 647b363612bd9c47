"""``uwsx.connect``: open a backend from a URL, a mapping of URLs, or a driver client."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from uwsx.errors import UnsupportedBackendError
from uwsx.plugins import get_registry
from uwsx.ports.backend import PORT_NAMES, Backend, Capability, ServerFunctions
from uwsx.ports.kv import KV
from uwsx.ports.locks import Locks
from uwsx.ports.pubsub import PubSub
from uwsx.ports.queue import Queue
from uwsx.ports.sorted_log import SortedLog
from uwsx.ports.stream import Stream
from uwsx.redact import redact_url

__all__ = ["CompositeBackend", "connect", "installed_backends", "require"]


def _scheme(url: str) -> str:
    if not isinstance(url, str):
        raise TypeError(f"backend URL must be a str, got {type(url).__name__}")
    if "://" not in url:
        raise ValueError(f"invalid backend URL {redact_url(url)!r}: expected scheme://...")
    scheme = urlsplit(url).scheme
    if not scheme:
        raise ValueError(f"invalid backend URL {redact_url(url)!r}: missing scheme")
    return scheme.lower()


def _check_prefix(key_prefix: object) -> str:
    if not isinstance(key_prefix, str):
        raise TypeError(f"key_prefix must be a str, got {type(key_prefix).__name__}")
    if "{" in key_prefix or "}" in key_prefix:
        raise ValueError("key_prefix must not contain '{' or '}' (they mark co-location tags)")
    return key_prefix


async def connect(
    target: str | Mapping[str, Any] | object, *, key_prefix: str = "", **options: Any
) -> Backend:
    """Open a backend.

    :param target: a URL (``memory://name``, ``redis://host``, ``postgresql://...``); a
        mapping ``{"default": url, "queue": other_url, ...}`` composing ports from several
        backends (keys are ``default`` or port names); or a driver client / pool a backend
        plugin declares it accepts.
    :param key_prefix: namespace for every key and channel.
    :param options: passed to the backend factory.
    :raises UnsupportedBackendError: no installed backend handles the scheme or client.
    """
    prefix = _check_prefix(key_prefix)
    if isinstance(target, str):
        spec = get_registry().for_scheme(_scheme(target))
        return await spec.open(target, key_prefix=prefix, **options)
    if isinstance(target, Mapping):
        return await _connect_mapping(target, prefix, options)
    if isinstance(target, Backend):
        return target
    spec = get_registry().for_client(target)
    return await spec.open(target, key_prefix=prefix, **options)


async def _connect_mapping(
    targets: Mapping[str, Any], prefix: str, options: dict[str, Any]
) -> Backend:
    allowed = {"default", *PORT_NAMES}
    unknown = set(targets) - allowed
    if unknown:
        raise ValueError(
            f"unknown keys {sorted(unknown)} in backend mapping; use 'default' or {PORT_NAMES}"
        )
    if not targets:
        raise ValueError("backend mapping is empty")
    opened: dict[str, Backend] = {}
    try:
        for role, target in targets.items():
            opened[role] = await connect(target, key_prefix=prefix, **options)
    except BaseException:
        for backend in opened.values():
            await backend.close()
        raise
    return CompositeBackend(opened)


class CompositeBackend:
    """Ports taken from several backends: each port from its own entry, else ``default``."""

    def __init__(self, parts: Mapping[str, Backend]) -> None:
        self._parts = dict(parts)
        default = self._parts.get("default")
        self._source: dict[str, Backend | None] = {
            port: self._parts.get(port, default) for port in PORT_NAMES
        }

    def _port(self, name: str) -> Any:
        backend = self._source[name]
        return None if backend is None else getattr(backend, name)

    @property
    def name(self) -> str:
        return "composite(" + ", ".join(f"{k}={v.name}" for k, v in self._parts.items()) + ")"

    @property
    def url(self) -> str:
        return ", ".join(f"{k}={v.url}" for k, v in self._parts.items())

    @property
    def key_prefix(self) -> str:
        return next(iter(self._parts.values())).key_prefix

    @property
    def capabilities(self) -> frozenset[Capability]:
        # Per-port capabilities come from the backend that serves that port.
        caps: set[Capability] = set()
        pubsub, log, kv = self._source["pubsub"], self._source["log"], self._source["kv"]
        locks = self._source["locks"]
        if pubsub is not None:
            caps |= pubsub.capabilities & {Capability.SHARDED_PUBSUB}
        if kv is not None and pubsub is kv:
            caps |= kv.capabilities & {Capability.KEY_EXPIRY_EVENTS}
        if log is not None:
            caps |= log.capabilities & {Capability.REPLICA_WAIT}
        if locks is not None:
            caps |= locks.capabilities & {Capability.SESSION_LOCKS}
        default = self._parts.get("default")
        if default is not None:
            caps |= default.capabilities & {Capability.SERVER_FUNCTIONS}
        if all(b.capabilities.__contains__(Capability.DURABLE) for b in self._parts.values()):
            caps.add(Capability.DURABLE)
        return frozenset(caps)

    @property
    def info(self) -> Mapping[str, str]:
        return {f"{k}.{ik}": iv for k, v in self._parts.items() for ik, iv in v.info.items()}

    @property
    def kv(self) -> KV | None:
        port: KV | None = self._port("kv")
        return port

    @property
    def log(self) -> SortedLog | None:
        port: SortedLog | None = self._port("log")
        return port

    @property
    def stream(self) -> Stream | None:
        port: Stream | None = self._port("stream")
        return port

    @property
    def pubsub(self) -> PubSub | None:
        port: PubSub | None = self._port("pubsub")
        return port

    @property
    def locks(self) -> Locks | None:
        port: Locks | None = self._port("locks")
        return port

    @property
    def queue(self) -> Queue | None:
        port: Queue | None = self._port("queue")
        return port

    @property
    def functions(self) -> ServerFunctions | None:
        default = self._parts.get("default")
        return None if default is None else default.functions

    async def close(self) -> None:
        for backend in self._parts.values():
            await backend.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def require(
    backend: Backend,
    feature: str,
    *,
    ports: tuple[str, ...] = (),
    capabilities: tuple[Capability, ...] = (),
) -> None:
    """Raise :class:`UnsupportedBackendError` at construction when ``backend`` lacks a port or
    capability ``feature`` needs, naming what is missing and which installed backends have it."""
    if not isinstance(backend, Backend):
        raise TypeError(
            f"{feature} needs a Backend from uwsx.connect(...), got {type(backend).__name__}"
        )
    missing_ports = [p for p in ports if getattr(backend, p) is None]
    missing_caps = [c for c in capabilities if c not in backend.capabilities]
    if not missing_ports and not missing_caps:
        return
    parts = []
    if missing_ports:
        parts.append("port(s) " + ", ".join(missing_ports))
    if missing_caps:
        parts.append("capability(ies) " + ", ".join(str(c) for c in missing_caps))
    having = get_registry().having(ports=ports, capabilities=capabilities)
    alternatives = ", ".join(having) if having else "none installed"
    raise UnsupportedBackendError(
        f"{feature} needs {' and '.join(parts)} which backend {backend.name!r} does not offer "
        f"(backends that can: {alternatives})"
    )


def installed_backends() -> list[dict[str, Any]]:
    """Name, distribution, version, schemes, ports and capabilities of each registered backend."""
    from uwsx.plugins import dist_version

    return [
        {
            "name": s.name,
            "dist": s.dist,
            "version": dist_version(s.dist) if s.dist else "unknown",
            "schemes": list(s.schemes),
            "ports": sorted(s.ports),
            "capabilities": sorted(str(c) for c in s.capabilities),
            "description": s.description,
        }
        for s in get_registry().specs()
    ]
