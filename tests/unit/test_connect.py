"""connect(), the backend registry, plugin loading switches and ``uwsx backends``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

import uwsx
from uwsx import Capability, PubSubBus, UnsupportedBackendError
from uwsx import plugins as plugin_mod
from uwsx.connect import CompositeBackend
from uwsx.features.replay import ReplayBuffer
from uwsx.hookspecs import hookimpl
from uwsx.registry import BackendRegistry, BackendSpec


@pytest.fixture(autouse=True)
def fresh_plugins() -> Iterator[None]:
    plugin_mod.reset()
    yield
    plugin_mod.reset()


async def test_memory_url_opens_a_shared_named_store() -> None:
    a = await uwsx.connect("memory://shared-name-test")
    b = await uwsx.connect("memory://shared-name-test")
    assert a.kv is not None
    assert b.kv is not None
    await a.kv.set("k", "v")
    assert await b.kv.get("k") == "v"
    private = await uwsx.connect("memory://")
    assert private.kv is not None
    assert await private.kv.get("k") is None
    for backend in (a, b, private):
        await backend.close()


async def test_key_prefix_isolates() -> None:
    a = await uwsx.connect("memory://prefix-test", key_prefix="a:")
    b = await uwsx.connect("memory://prefix-test", key_prefix="b:")
    assert a.kv is not None
    assert b.kv is not None
    await a.kv.set("k", "1")
    assert await b.kv.get("k") is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost", "pip install uwsx-redis"),
        ("postgresql+psycopg://h/db", "pip install uwsx-postgres"),
        ("nats://x", "unknown URL scheme 'nats'"),
    ],
)
async def test_unknown_schemes_name_the_package(
    url: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UWSX_DISABLE_PLUGIN_AUTOLOAD", "1")
    with pytest.raises(UnsupportedBackendError, match=message):
        await uwsx.connect(url)


@pytest.mark.parametrize("url", ["not a url", "localhost:6379", "://x"])
async def test_invalid_urls(url: str) -> None:
    with pytest.raises(ValueError, match="invalid backend URL"):
        await uwsx.connect(url)


async def test_invalid_targets_and_prefixes() -> None:
    with pytest.raises(UnsupportedBackendError, match=r"accepts a builtins\.int"):
        await uwsx.connect(42)
    with pytest.raises(ValueError, match="co-location"):
        await uwsx.connect("memory://", key_prefix="{x}")
    with pytest.raises(TypeError, match="key_prefix"):
        await uwsx.connect("memory://", key_prefix=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory URLs"):
        await uwsx.connect("memory://name/path")


async def test_mapping_composes_ports_from_several_backends() -> None:
    backend = await uwsx.connect({"default": "memory://compose-a", "queue": "memory://compose-b"})
    assert isinstance(backend, CompositeBackend)
    assert backend.kv is not None
    assert backend.queue is not None
    await backend.queue.enqueue("q", "1")
    other = await uwsx.connect("memory://compose-b")
    assert other.queue is not None
    assert await other.queue.pending("q") == 1
    assert Capability.SHARDED_PUBSUB in backend.capabilities
    await backend.close()
    with pytest.raises(ValueError, match="unknown keys"):
        await uwsx.connect({"cache": "memory://"})


async def test_feature_on_backend_without_port_names_what_is_missing() -> None:
    backend = await uwsx.connect({"kv": "memory://"})
    with pytest.raises(UnsupportedBackendError, match=r"needs port\(s\) pubsub.*memory"):
        PubSubBus(backend)
    memory = await uwsx.connect("memory://")
    with pytest.raises(UnsupportedBackendError, match="replica_wait"):
        ReplayBuffer(memory, durability="replicated")
    with pytest.raises(TypeError, match="needs a Backend"):
        PubSubBus("memory://")  # type: ignore[arg-type]


class _ToyPlugin:
    @hookimpl
    def uwsx_register_backends(self, registry: BackendRegistry) -> None:
        registry.register(
            BackendSpec(
                name="toy",
                schemes=("toy",),
                factory="uwsx.memory.backend:open_backend",
                ports=frozenset({"kv"}),
                description="a test backend",
            )
        )


async def test_plugin_registered_through_api_is_selected_by_scheme() -> None:
    uwsx.register_plugin(_ToyPlugin(), name="toy-plugin")
    spec = plugin_mod.get_registry().for_scheme("toy")
    assert spec.name == "toy"
    assert "toy" in [row["name"] for row in uwsx.installed_backends()]
    plugin_mod.unregister_plugin("toy-plugin")
    with pytest.raises(UnsupportedBackendError):
        plugin_mod.get_registry().for_scheme("toy")


def test_conflicting_scheme_registration_is_refused() -> None:
    registry = BackendRegistry()
    registry.register(BackendSpec(name="a", schemes=("x",), factory="m:f"))
    with pytest.raises(ValueError, match="claimed by backends"):
        registry.register(BackendSpec(name="b", schemes=("x",), factory="m:f"))
    with pytest.raises(ValueError, match="unknown ports"):
        BackendSpec(name="c", schemes=("y",), factory="m:f", ports=frozenset({"cache"}))


def test_disabled_plugins_are_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UWSX_DISABLED_PLUGINS", "memory")
    with pytest.raises(UnsupportedBackendError):
        plugin_mod.get_registry().for_scheme("memory")


def test_autoload_off_keeps_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UWSX_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert [s.name for s in plugin_mod.get_registry().specs()] == ["memory"]


def test_lazy_factory_import_error_names_the_install_hint() -> None:
    spec = BackendSpec(
        name="ghost",
        schemes=("ghost",),
        factory="no_such_driver.mod:open",
        install_hint="pip install uwsx-ghost",
    )
    with pytest.raises(UnsupportedBackendError, match="pip install uwsx-ghost"):
        spec.load_factory()


def test_cli_backends_lists_memory_with_capabilities() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "uwsx.cli", "backends", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = {row["name"]: row for row in json.loads(out.stdout)["backends"]}
    assert rows["memory"]["schemes"] == ["memory"]
    assert "sharded_pubsub" in rows["memory"]["capabilities"]
    assert rows["memory"]["version"] == uwsx.__version__
