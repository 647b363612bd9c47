"""Fixtures for feature tests, parametrised over every backend that has the needed ports.

``backend_url`` yields a URL per backend kind: ``memory`` and the real servers the session
deployments in ``tests/conftest.py`` provide (see ``FEATURE_BACKENDS``). A test picks the kinds it
can run on with ``@pytest.mark.backends("memory", "redis", ...)``; by default every kind whose
backend has the ports the test's feature needs.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

import uwsx
from uwsx.ports.backend import Backend
from uwsx.testing import ManualClock, manual_runtime

#: Backend kinds feature tests run on; each real kind maps to its session deployment fixture.
REAL_BACKENDS: dict[str, str] = {
    "redis": "redis_standalone",
    "redis_cluster": "redis_cluster",
    "valkey": "valkey_standalone",
    "postgres": "pg15",
}
FEATURE_BACKENDS: tuple[str, ...] = ("memory", *REAL_BACKENDS)
#: Capabilities a kind lacks: tests marked ``needs(capability)`` are not generated for it (the
#: feature refuses such a backend at construction, which has its own tests).
LACKS: dict[str, frozenset[str]] = {
    "memory": frozenset({"replica_wait", "server_functions", "durable"}),
    "redis": frozenset({"session_locks", "replica_wait"}),
    "redis_cluster": frozenset({"session_locks", "replica_wait"}),
    "valkey": frozenset({"session_locks", "replica_wait"}),
    "postgres": frozenset(
        {"sharded_pubsub", "key_expiry_events", "replica_wait", "server_functions"}
    ),
}

_names = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends(*kinds): backend kinds a feature test runs on")
    config.addinivalue_line("markers", "needs(*capabilities): only kinds that have them")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        needs = {c for m in metafunc.definition.iter_markers("needs") for c in m.args}
        kinds = [
            k
            for k in FEATURE_BACKENDS
            if (marker is None or k in marker.args) and not needs & LACKS[k]
        ]
        metafunc.parametrize("backend_kind", kinds)


@pytest.fixture(autouse=True)
def clock() -> Iterator[ManualClock]:
    """A manual clock installed before any backend opens (memory stores take their clock from
    the runtime at creation). On real servers only the features' own timers follow it; server
    TTLs run on the server's clock, so TTL tests advance this clock *and* poll (bounded)."""
    with manual_runtime() as c:
        yield c


@pytest.fixture
def backend_url(backend_kind: str, request: pytest.FixtureRequest) -> str:
    if backend_kind == "memory":
        return f"memory://features-{next(_names)}"
    deployment = request.getfixturevalue(REAL_BACKENDS[backend_kind])
    if backend_kind == "postgres":
        url: str = deployment.url_for("asyncpg")
        return url
    url = deployment.url
    return url


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> str:
    return f"ft{next(_names)}:"


@pytest.fixture
async def open_backend(
    backend_url: str, key_prefix: str
) -> AsyncIterator[Callable[[], Awaitable[Backend]]]:
    """Open another client on the test's storage and prefix (one per simulated instance)."""
    opened: list[Backend] = []

    async def opener() -> Backend:
        backend = await uwsx.connect(backend_url, key_prefix=key_prefix)
        opened.append(backend)
        return backend

    yield opener
    for backend in opened:
        await backend.close()


@pytest.fixture
async def backend(open_backend: Callable[[], Awaitable[Backend]]) -> Backend:
    return await open_backend()
