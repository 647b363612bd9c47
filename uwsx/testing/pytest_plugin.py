"""The ``uwsx`` pytest plugin (entry point ``pytest11``): backend fixtures for the contract suite.

Loaded automatically wherever uwsx is installed, so it imports nothing heavy and defines only
fixtures a test asks for by name.

Option
  ``--uwsx-backend URL``: the backend every contract class that does not override
  ``uwsx_backend_target`` runs against (default: a fresh ``memory://`` store per test).

Fixtures
  ``uwsx_backend_target``
      the URL (or driver client) to open; override it in a contract subclass.
  ``uwsx_backend_options``
      extra keyword options for :func:`uwsx.connect` (default ``{}``).
  ``uwsx_key_prefix``
      the test's own namespace: a session-unique run id plus a digest of the test id, so
      neither other tests nor earlier runs against the same server share its keys.
  ``backend``
      a connected :class:`~uwsx.ports.Backend` in that namespace, closed after the test.
  ``open_backend``
      ``await open_backend(key_prefix=None)`` opens another client on the same storage
      (same namespace unless given) for multi-client tests; every one is closed after the test.

The fixtures need pytest-asyncio; without it, requesting ``backend`` fails with that message.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

# Before anything imports the suites: their plain asserts then report values on failure.
pytest.register_assert_rewrite("uwsx.testing.contract")

if TYPE_CHECKING:
    from uwsx.ports.backend import Backend
    from uwsx.testing.contract import BackendOpener

__all__ = ["backend_fixture", "key_prefix_for", "open_backend_fixture"]

log = logging.getLogger("uwsx.testing")

_RUN_ID = pytest.StashKey[str]()
_MEMORY_STORE_PREFIX = "uwsx-contract-"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("uwsx", "uwsx backend contract suite")
    group.addoption(
        "--uwsx-backend",
        action="store",
        default=None,
        metavar="URL",
        help="backend URL the uwsx contract suites run against (default: memory://)",
    )


def pytest_configure(config: pytest.Config) -> None:
    from uwsx import _runtime

    config.stash[_RUN_ID] = _runtime.current().ids.hex(3)


def key_prefix_for(run_id: str, nodeid: str) -> str:
    """The namespace of one test: ``uwsx_ct_<run>_<digest of the test id>:``.

    Letters, digits and ``_`` only (before the final ``:``), short, and never a ``{`` or ``}``,
    so every backend accepts it and a Redis Cluster hash tag inside a key still decides its slot.
    """
    digest = hashlib.blake2b(nodeid.encode(), digest_size=5).hexdigest()
    return f"uwsx_ct_{run_id}_{digest}:"


@pytest.fixture
def uwsx_key_prefix(request: pytest.FixtureRequest) -> str:
    return key_prefix_for(request.config.stash[_RUN_ID], request.node.nodeid)


@pytest.fixture
def uwsx_backend_options() -> dict[str, Any]:
    return {}


@pytest.fixture
def uwsx_backend_target(request: pytest.FixtureRequest, uwsx_key_prefix: str) -> Iterator[str]:
    url = request.config.getoption("--uwsx-backend")
    if url:
        yield str(url)
        return
    name = _MEMORY_STORE_PREFIX + uwsx_key_prefix.rstrip(":")
    yield f"memory://{name}"
    from uwsx.memory import drop_store

    drop_store(name)


async def _cleanup(backend: Backend, instance: object) -> None:
    """Best effort: remove what the test left in its namespace on a persistent server.

    Keys, and logs in the default space and in the contract class's space. Lock fences stay
    (no port operation deletes them, by design) and queue rows stay (a space is shared by the
    tests of one class); both are in the test's run-unique namespace.
    """
    space_of = getattr(instance, "uwsx_space", None)
    for port_name in ("kv", "log", "stream"):
        port = getattr(backend, port_name, None)
        if port is None:
            continue
        ports = [port]
        if port_name != "kv" and callable(space_of):
            ports.append(port.space(space_of(port_name)))
        for each in ports:
            try:
                await each.delete_prefix("")
            except Exception:  # the test's outcome is what matters; never mask it
                log.debug("contract clean-up of %s failed", port_name, exc_info=True)


async def _backend(
    request: pytest.FixtureRequest,
    uwsx_backend_target: Any,
    uwsx_key_prefix: str,
    uwsx_backend_options: dict[str, Any],
) -> AsyncIterator[Backend]:
    import uwsx

    opened = await uwsx.connect(
        uwsx_backend_target, key_prefix=uwsx_key_prefix, **uwsx_backend_options
    )
    try:
        yield opened
    finally:
        try:
            await _cleanup(opened, request.instance)
        finally:
            await opened.close()


async def _open_backend(
    uwsx_backend_target: Any, uwsx_key_prefix: str, uwsx_backend_options: dict[str, Any]
) -> AsyncIterator[BackendOpener]:
    import uwsx

    clients: list[Backend] = []

    async def opener(*, key_prefix: str | None = None) -> Backend:
        prefix = uwsx_key_prefix if key_prefix is None else key_prefix
        client = await uwsx.connect(uwsx_backend_target, key_prefix=prefix, **uwsx_backend_options)
        clients.append(client)
        return client

    try:
        yield opener
    finally:
        for client in reversed(clients):
            await client.close()


def _async_fixture(fn: Callable[..., Any], name: str) -> Any:
    """``fn`` as an async fixture named ``name``; without pytest-asyncio, a fixture that fails
    with the reason (this plugin loads wherever uwsx is installed and must not break pytest)."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - exercised only without pytest-asyncio

        def missing() -> None:
            pytest.fail(f"the uwsx fixture {name!r} needs pytest-asyncio (pip install it)")

        return pytest.fixture(name=name)(missing)
    return pytest_asyncio.fixture(name=name)(fn)


backend_fixture = _async_fixture(_backend, "backend")
open_backend_fixture = _async_fixture(_open_backend, "open_backend")
