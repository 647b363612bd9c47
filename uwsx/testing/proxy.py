"""``BackendProxy``: the shared shape of test backends that wrap another backend's ports."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from uwsx.ports.backend import PORT_NAMES, Backend, Capability, ServerFunctions

__all__ = ["BackendProxy"]


class BackendProxy:
    """Forwards everything to ``backend``; each present port is passed through
    :meth:`wrap_port` once, at construction. ``capabilities`` may be overridden."""

    def __init__(
        self, backend: Backend, *, capabilities: frozenset[Capability] | None = None
    ) -> None:
        self.backend = backend
        self._caps = capabilities
        self._ports: dict[str, Any] = {}
        for name in PORT_NAMES:
            port = getattr(backend, name)
            self._ports[name] = None if port is None else self.wrap_port(name, port)

    def wrap_port(self, name: str, port: Any) -> Any:
        """The object standing in for port ``name`` (identity by default)."""
        return port

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def url(self) -> str:
        return self.backend.url

    @property
    def key_prefix(self) -> str:
        return self.backend.key_prefix

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self.backend.capabilities if self._caps is None else self._caps

    @property
    def info(self) -> Mapping[str, str]:
        return self.backend.info

    @property
    def kv(self) -> Any:
        return self._ports["kv"]

    @property
    def log(self) -> Any:
        return self._ports["log"]

    @property
    def stream(self) -> Any:
        return self._ports["stream"]

    @property
    def pubsub(self) -> Any:
        return self._ports["pubsub"]

    @property
    def locks(self) -> Any:
        return self._ports["locks"]

    @property
    def queue(self) -> Any:
        return self._ports["queue"]

    @property
    def functions(self) -> ServerFunctions | None:
        return self.backend.functions

    async def close(self) -> None:
        await self.backend.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
