"""The contract suite catches broken backends: each mutant in :mod:`tests.contract.mutants`
fails the contract tests that guard the guarantee it breaks, while the real memory backend
passes the very same tests.

Each case runs an inner pytest session (pytester) whose test module subclasses a contract class
twice, exactly as an adapter's tests do: once aimed at the mutant's throwaway scheme, once at a
healthy memory store. The inner session runs pytest-asyncio in *strict* mode, which also proves
the suites do not depend on auto mode.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import uwsx
from tests.contract.mutants import MUTANTS, Mutant, MutantPlugin
from uwsx.plugins import unregister_plugin

pytest_plugins = ["pytester"]

INNER_INI = """\
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
filterwarnings = error
"""

INNER_MODULE = """\
from __future__ import annotations

import pytest

from uwsx.testing.contract import {contract}


class TestMutant({contract}):
    # The mutant may strand a message; fail fast instead of waiting the default 10 s.
    uwsx_wait_timeout = 1.0

    @pytest.fixture
    def uwsx_backend_target(self, uwsx_key_prefix: str) -> str:
        return "{scheme}://" + uwsx_key_prefix.rstrip(":")


class TestHealthy({contract}):
    pass
"""


@pytest.fixture(scope="module", autouse=True)
def mutant_schemes() -> Iterator[None]:
    name = uwsx.register_plugin(MutantPlugin(), name="uwsx-contract-mutants")
    yield
    unregister_plugin(name)


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.scheme for m in MUTANTS])
def test_contract_catches_mutant(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutant: Mutant
) -> None:
    # Only the plugins the suite needs: other installed plugins (hypothesis...) would be
    # imported again for every inner session and dominate its run time.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        test_inner=INNER_MODULE.format(contract=mutant.contract, scheme=mutant.scheme)
    )
    reprec = pytester.inline_run(
        *("-p", "no:cacheprovider", "-p", "pytest_asyncio.plugin"),
        *("-p", "uwsx.testing.pytest_plugin", "-k", " or ".join(mutant.tests)),
    )
    reports = [r for r in reprec.getreports("pytest_runtest_logreport") if r.when == "call"]

    def outcomes(cls: str, test: str) -> list[pytest.TestReport]:
        # A parametrised test has one report per case: ``name[case]``.
        name = f"test_inner.py::{cls}::{test}"
        return [r for r in reports if r.nodeid == name or r.nodeid.startswith(name + "[")]

    for test in mutant.tests:
        healthy, broken = outcomes("TestHealthy", test), outcomes("TestMutant", test)
        assert healthy, f"{test} did not run on the healthy backend"
        assert broken, f"{test} did not run on {mutant.scheme}"
        for report in healthy:
            assert report.passed, f"{report.nodeid} fails on memory:\n{report.longrepr}"
        failed = [r for r in broken if r.failed]
        assert failed, f"{test} passed on {mutant.scheme}: the contract misses the bug"
        for report in failed:
            # The last line of a failure names the exception: ``path:line: AssertionError``.
            last = str(report.longrepr).rstrip().splitlines()[-1]
            assert last.endswith("AssertionError"), f"{report.nodeid} failed otherwise: {last}"
    errors = [
        r for r in reprec.getreports("pytest_runtest_logreport") if r.failed and r.when != "call"
    ]
    assert errors == [], [r.longrepr for r in errors]
