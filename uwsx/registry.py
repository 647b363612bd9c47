"""Backend specifications and the registry plugins fill in."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from uwsx.errors import UnsupportedBackendError
from uwsx.ports.backend import PORT_NAMES, Capability

if TYPE_CHECKING:
    from uwsx.ports.backend import Backend

__all__ = ["KNOWN_PROVIDERS", "BackendRegistry", "BackendSpec", "load_object"]

#: Scheme -> distribution that provides it, for install hints when nothing registered it.
KNOWN_PROVIDERS: dict[str, str] = {
    "redis": "uwsx-redis",
    "rediss": "uwsx-redis",
    "redis+cluster": "uwsx-redis",
    "rediss+cluster": "uwsx-redis",
    "valkey": "uwsx-valkey",
    "valkeys": "uwsx-valkey",
    "valkey+cluster": "uwsx-valkey",
    "valkeys+cluster": "uwsx-valkey",
    "postgres": "uwsx-postgres",
    "postgresql": "uwsx-postgres",
    "postgresql+asyncpg": "uwsx-postgres",
    "postgresql+psycopg": "uwsx-postgres",
}

BackendFactory = Callable[..., Any]


def load_object(ref: str, *, hint: str = "") -> Any:
    """Import ``"pkg.module:attr"``; an ImportError becomes an UnsupportedBackendError with
    ``hint`` (what to install)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"factory reference must look like 'pkg.module:attr', got {ref!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = f"; {hint}" if hint else ""
        raise UnsupportedBackendError(f"cannot import {module_name!r} ({exc}){extra}") from exc
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """How to open one kind of backend.

    :param name: short name shown by ``uwsx backends`` (``"redis"``).
    :param schemes: URL schemes it opens (``("redis", "rediss")``).
    :param factory: ``"pkg.mod:attr"`` (or the callable itself) of an async function
        ``open(url_or_client, *, key_prefix, **options) -> Backend``.
    :param dist: distribution name, used for the version shown and in error messages.
    :param ports: ports it can provide.
    :param capabilities: capabilities it can offer (the connected server may offer fewer).
    :param client_types: dotted class names of driver clients it accepts instead of a URL
        (matched against the object's MRO without importing anything).
    :param install_hint: what to run when the driver is missing.
    """

    name: str
    schemes: tuple[str, ...]
    factory: str | BackendFactory
    dist: str = ""
    ports: frozenset[str] = field(default_factory=lambda: frozenset(PORT_NAMES))
    capabilities: frozenset[Capability] = frozenset()
    client_types: tuple[str, ...] = ()
    install_hint: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("BackendSpec.name must be non-empty")
        if not self.schemes:
            raise ValueError(f"backend {self.name!r} must declare at least one URL scheme")
        unknown = set(self.ports) - set(PORT_NAMES)
        if unknown:
            raise ValueError(f"backend {self.name!r} declares unknown ports {sorted(unknown)}")

    def load_factory(self) -> BackendFactory:
        if callable(self.factory):
            return self.factory
        factory: BackendFactory = load_object(self.factory, hint=self.install_hint)
        return factory

    def accepts_client(self, client: object) -> bool:
        names = {f"{c.__module__}.{c.__qualname__}" for c in type(client).__mro__}
        return any(t in names for t in self.client_types)

    async def open(self, target: object, *, key_prefix: str, **options: Any) -> Backend:
        backend: Backend = await self.load_factory()(target, key_prefix=key_prefix, **options)
        return backend


class BackendRegistry:
    """Schemes to :class:`BackendSpec`; filled by ``uwsx_register_backends`` hooks."""

    def __init__(self) -> None:
        self._specs: dict[str, BackendSpec] = {}
        self._by_scheme: dict[str, BackendSpec] = {}

    def register(self, spec: BackendSpec) -> None:
        """Add a spec. A scheme already claimed by another backend raises ``ValueError``."""
        for scheme in spec.schemes:
            owner = self._by_scheme.get(scheme)
            if owner is not None and owner.name != spec.name:
                raise ValueError(
                    f"URL scheme {scheme!r} is claimed by backends {owner.name!r} and {spec.name!r}"
                )
        self._specs[spec.name] = spec
        for scheme in spec.schemes:
            self._by_scheme[scheme] = spec

    def specs(self) -> list[BackendSpec]:
        return sorted(self._specs.values(), key=lambda s: s.name)

    def get(self, name: str) -> BackendSpec | None:
        return self._specs.get(name)

    def for_scheme(self, scheme: str) -> BackendSpec:
        spec = self._by_scheme.get(scheme.lower())
        if spec is not None:
            return spec
        provider = KNOWN_PROVIDERS.get(scheme.lower())
        known = ", ".join(sorted(self._by_scheme)) or "none"
        if provider:
            raise UnsupportedBackendError(
                f"no installed backend handles {scheme}:// URLs; install it with "
                f"`pip install {provider}` (installed schemes: {known})"
            )
        raise UnsupportedBackendError(
            f"unknown URL scheme {scheme!r}: no installed uwsx backend handles it "
            f"(installed schemes: {known}); a third-party package can add it through the "
            "'uwsx' entry-point group"
        )

    def for_client(self, client: object) -> BackendSpec:
        for spec in self.specs():
            if spec.accepts_client(client):
                return spec
        raise UnsupportedBackendError(
            f"no installed uwsx backend accepts a {type(client).__module__}."
            f"{type(client).__qualname__} client; pass a URL instead"
        )

    def having(
        self, *, ports: Iterable[str] = (), capabilities: Iterable[Capability] = ()
    ) -> list[str]:
        """Names of registered backends that declare every port and capability given."""
        need_ports, need_caps = set(ports), set(capabilities)
        return [
            s.name for s in self.specs() if need_ports <= s.ports and need_caps <= s.capabilities
        ]
