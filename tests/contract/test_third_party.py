"""A third-party backend registers through the plugin API and passes the KV contract.

The ``toy`` backend stands in for a package like ``uwsx-dragonfly``: it is registered with
:func:`uwsx.register_plugin` and a ``uwsx_register_backends`` hook implementation (what an entry
point in the ``uwsx`` group does for an installed distribution), offers only the KV port (borrowed
from a memory store), and is selected by ``uwsx.connect("toy://...")``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import pytest

import uwsx
from uwsx.hookspecs import hookimpl
from uwsx.memory.kv import MemoryKV
from uwsx.memory.store import MemoryStore, drop_store, open_store
from uwsx.plugins import unregister_plugin
from uwsx.ports.backend import Capability
from uwsx.registry import BackendRegistry, BackendSpec
from uwsx.testing.contract import BackendContract, KVContract


class ToyBackend:
    """A KV-only backend: every other port is absent."""

    def __init__(self, store: MemoryStore, key_prefix: str) -> None:
        self._store = store
        self._prefix = key_prefix
        self._kv = MemoryKV(store, key_prefix)

    name = "toy"
    log = stream = pubsub = locks = queue = functions = None

    @property
    def url(self) -> str:
        return f"toy://{self._store.name}"

    @property
    def key_prefix(self) -> str:
        return self._prefix

    @property
    def capabilities(self) -> frozenset[Capability]:
        return frozenset()

    @property
    def info(self) -> Mapping[str, str]:
        return {"server": "toy"}

    @property
    def kv(self) -> MemoryKV:
        return self._kv

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def open_toy(target: str, *, key_prefix: str = "", **options: Any) -> ToyBackend:
    if options:
        raise TypeError(f"unexpected options for the toy backend: {sorted(options)}")
    return ToyBackend(open_store("toy-" + urlsplit(target).netloc), key_prefix)


class ToyPlugin:
    """What a third-party distribution's ``uwsx`` entry point would register."""

    @hookimpl
    def uwsx_register_backends(self, registry: BackendRegistry) -> None:
        registry.register(
            BackendSpec(
                name="toy",
                schemes=("toy",),
                factory=open_toy,
                dist="uwsx-toy",
                ports=frozenset({"kv"}),
                description="KV only, on a memory store (plugin API self-test)",
            )
        )


@pytest.fixture(scope="module")
def toy_registered() -> Iterator[None]:
    name = uwsx.register_plugin(ToyPlugin(), name="uwsx-toy")
    yield
    unregister_plugin(name)


async def test_toy_scheme_selects_the_toy_backend(toy_registered: None) -> None:
    async with await uwsx.connect("toy://select", key_prefix="p:") as backend:
        assert isinstance(backend, ToyBackend)
        assert backend.name == "toy"
        assert backend.key_prefix == "p:"
        assert backend.log is None
    listed = {b["name"]: b for b in uwsx.installed_backends()}
    assert listed["toy"]["schemes"] == ["toy"]
    assert listed["toy"]["ports"] == ["kv"]
    drop_store("toy-select")


class TestToyBackend(KVContract, BackendContract):
    """The contract a third-party adapter's own test module would run."""

    @pytest.fixture
    def uwsx_backend_target(self, toy_registered: None, uwsx_key_prefix: str) -> Iterator[str]:
        name = uwsx_key_prefix.rstrip(":")
        yield f"toy://{name}"
        drop_store("toy-" + name)
