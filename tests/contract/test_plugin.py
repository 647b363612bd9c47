"""The ``uwsx`` pytest plugin: option, fixtures and per-test namespaces."""

from __future__ import annotations

import pytest

from uwsx.memory.store import get_store
from uwsx.ports.backend import Backend
from uwsx.testing.contract import BackendOpener
from uwsx.testing.pytest_plugin import key_prefix_for

pytest_plugins = ["pytester"]


def test_key_prefix_is_derived_from_run_and_test_id() -> None:
    one = key_prefix_for("abc123", "tests/x.py::TestA::test_one")
    assert one == key_prefix_for("abc123", "tests/x.py::TestA::test_one")
    assert one != key_prefix_for("abc123", "tests/x.py::TestA::test_two")
    assert one != key_prefix_for("def456", "tests/x.py::TestA::test_one")
    assert one.startswith("uwsx_ct_abc123_")
    assert one.endswith(":")
    assert one[:-1].replace("_", "").isalnum(), "letters, digits and _ only"


async def test_fixtures_share_storage_and_prefix(
    backend: Backend, open_backend: BackendOpener, uwsx_key_prefix: str
) -> None:
    assert backend.key_prefix == uwsx_key_prefix
    other = await open_backend()
    assert other.key_prefix == uwsx_key_prefix
    assert backend.kv is not None
    assert other.kv is not None
    await backend.kv.set("k", "shared")
    assert await other.kv.get("k") == "shared"
    elsewhere = await open_backend(key_prefix=uwsx_key_prefix + "x:")
    assert elsewhere.kv is not None
    assert await elsewhere.kv.get("k") is None


def test_default_target_is_a_fresh_memory_store_dropped_after_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        test_inner="""
        import pytest

        def record(*values):
            with open("seen.txt", "a") as out:
                out.write(" ".join(values) + "\\n")

        @pytest.mark.asyncio
        async def test_one(backend, uwsx_backend_target, uwsx_key_prefix):
            record(uwsx_backend_target, uwsx_key_prefix, backend.url)

        @pytest.mark.asyncio
        async def test_two(backend, uwsx_backend_target, uwsx_key_prefix):
            record(uwsx_backend_target, uwsx_key_prefix, backend.url)
        """
    )
    reprec = pytester.inline_run("-p", "no:cacheprovider")
    reprec.assertoutcome(passed=2)
    lines = (pytester.path / "seen.txt").read_text().splitlines()
    (t1, p1, url1), (t2, p2, url2) = (line.split() for line in lines)
    assert t1.startswith("memory://")
    assert (url1, url2) == (t1, t2)
    assert t1 != t2, "every test gets its own store"
    assert p1 != p2, "every test gets its own key prefix"
    assert get_store(t1.removeprefix("memory://")) is None, "the store is dropped afterwards"


def test_uwsx_backend_option_selects_the_target(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        test_inner="""
        import pytest

        @pytest.mark.asyncio
        async def test_target(backend, open_backend):
            assert backend.url == "memory://chosen-by-option"
            other = await open_backend()
            assert other.url == backend.url
        """
    )
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--uwsx-backend", "memory://chosen-by-option"
    )
    result.assert_outcomes(passed=1)


def test_plugin_is_loaded_from_its_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_inprocess("--help")
    result.stdout.fnmatch_lines(["*--uwsx-backend=URL*"])
