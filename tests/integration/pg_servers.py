"""PostgreSQL servers for integration tests: PostgreSQL 15 and 16, found or started for real (see
:mod:`tests.integration.harness` for the search order).

Per major version, in order:

1. ``UWSX_TEST_POSTGRES15_URL`` / ``UWSX_TEST_POSTGRES16_URL``, then ``UWSX_TEST_POSTGRES_URL``
   when that server has the wanted major version;
2. a throwaway cluster from local binaries -- 15 from PATH (``initdb`` / ``postgres``) or
   ``/usr/lib/postgresql/15/bin``, 16 from the ``pgserver`` wheel -- made with ``initdb`` in a
   fresh directory and started on a free loopback port (about a second). Postgres refuses to run
   as root, so under root both run as the ``postgres`` user;
3. ``postgres:<major>`` with testcontainers when a Docker engine answers;
4. otherwise skip, or fail under ``UWSX_REQUIRE_BACKENDS=1``.

A throwaway cluster trades durability for speed (``fsync=off``), logs into its own directory,
and is stopped by PID with a fast shutdown (SIGINT) so connected clients do not hold it up.
Tests that stop and start a server use :func:`throwaway_cluster` for a private one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.harness import (
    ServerProcess,
    docker_available,
    env_url,
    free_port,
    missing_backend,
    wait_until,
    which,
)

__all__ = [
    "DRIVERS",
    "VERSIONS",
    "PgServer",
    "bindir_for",
    "driver_url",
    "find_server",
    "throwaway_cluster",
]


def _selected(variable: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """The subset of ``known`` named in ``variable`` (comma-separated), default all of them."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return known
    wanted = tuple(part.strip() for part in raw.split(",") if part.strip())
    unknown = set(wanted) - set(known)
    if unknown:
        raise ValueError(f"{variable}: unknown {sorted(unknown)}; choose from {known}")
    return wanted


#: Major versions and drivers the Postgres tests run on; narrow them with
#: ``UWSX_TEST_POSTGRES_VERSIONS=16`` / ``UWSX_TEST_POSTGRES_DRIVERS=psycopg`` (tox envs do).
VERSIONS = _selected("UWSX_TEST_POSTGRES_VERSIONS", ("15", "16"))
DRIVERS = _selected("UWSX_TEST_POSTGRES_DRIVERS", ("asyncpg", "psycopg"))

_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "400",
    "shared_buffers": "64MB",
    "logging_collector": "on",
    "log_filename": "postgres.log",
    "log_min_messages": "warning",
}


def driver_url(url: str, driver: str) -> str:
    """``url`` with the ``postgresql+<driver>`` scheme uwsx reads to pick the driver."""
    _, _, rest = url.partition("://")
    return f"postgresql+{driver}://{rest}"


def _major(bindir: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    # "postgres (PostgreSQL) 15.20 (Debian ...)"
    words = out.split()
    return words[2].split(".")[0] if len(words) >= 3 else None


def bindir_for(version: str) -> Path | None:
    """A directory with ``initdb`` and ``postgres`` of major ``version``."""
    candidates: list[Path] = []
    if version == "16":
        # Located, not imported: importing pgserver warns about XDG_RUNTIME_DIR.
        spec = importlib.util.find_spec("pgserver")
        if spec is not None and spec.submodule_search_locations:
            root = Path(next(iter(spec.submodule_search_locations)))
            candidates.append(root / "pginstall" / "bin")
    on_path = which("initdb")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    candidates.append(Path(f"/usr/lib/postgresql/{version}/bin"))
    for candidate in candidates:
        if (candidate / "initdb").is_file() and _major(candidate) == version:
            return candidate
    return None


def _server_major(url: str) -> str | None:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return str(conn.info.server_version // 10000)
    except psycopg.Error:
        return None


@dataclass
class PgServer:
    """A server tests connect to, and (when we own it) the means to stop and start it."""

    version: str
    url: str
    bindir: Path | None = None
    workdir: Path | None = None
    port: int = 0
    server: ServerProcess | None = None
    user: str | None = None
    cleanup: list[Any] = field(default_factory=list)

    @property
    def owned(self) -> bool:
        return self.workdir is not None

    def url_for(self, driver: str) -> str:
        return driver_url(self.url, driver)

    def _argv(self) -> list[str]:
        assert self.bindir is not None
        assert self.workdir is not None
        argv = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.workdir / "data"),
            "-p",
            str(self.port),
        ]
        argv += ["-k", str(self.workdir)]
        for name, value in _SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        return [*argv, "-c", f"log_directory={self.workdir / 'log'}"]

    def start(self) -> None:
        """Start the (stopped) server and wait until it accepts connections."""
        assert self.owned
        popen: dict[str, Any] = {"user": self.user, "group": self.user} if self.user else {}
        self.server = server = ServerProcess(self._argv(), name=f"postgres-{self.port}", **popen)

        def ready() -> bool:
            if not server.alive():
                raise RuntimeError(f"postgres on port {self.port} exited; see {self.workdir}/log")
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True

        wait_until(ready, timeout=30, what=f"postgres {self.version} on port {self.port}")

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (SIGINT: clients are disconnected, clean shutdown) or
        ``immediate`` (SIGQUIT: crash-like, recovery on the next start)."""
        server, self.server = self.server, None
        if server is None or not server.alive():
            return
        sig = signal.SIGINT if mode == "fast" else signal.SIGQUIT
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, sig)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    def terminate_backends(self, application_name: str = "uwsx") -> int:
        """``pg_terminate_backend`` every session of ``application_name``; returns how many."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                (application_name,),
            ).fetchall()
        return int(rows[0][0])

    def close(self) -> None:
        self.stop()
        for step in reversed(self.cleanup):
            with contextlib.suppress(Exception):
                step()


def _run_as(user: str | None, argv: list[str]) -> None:
    popen: dict[str, Any] = {"user": user, "group": user} if user else {}
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **popen)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {result.stdout}{result.stderr}")


def start_cluster(version: str, bindir: Path) -> PgServer:
    """initdb + start a fresh cluster of ``bindir``'s PostgreSQL on a free port."""
    user = None
    workdir = Path(tempfile.mkdtemp(prefix=f"uwsx-pg{version}-"))
    if os.geteuid() == 0:
        # Postgres refuses to run as root.
        user = "postgres"
        entry = pwd.getpwnam(user)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    port = free_port()
    srv = PgServer(
        version=version,
        url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        bindir=bindir,
        workdir=workdir,
        port=port,
        user=user,
    )
    srv.cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
    try:
        _run_as(
            user,
            [str(bindir / "initdb"), "-D", str(workdir / "data"), "-A", "trust", "-U", "postgres",
             "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
        )  # fmt: skip
        srv.start()
    except BaseException:
        srv.close()
        raise
    return srv


def _from_container(version: str) -> tuple[PgServer | None, str]:
    if not docker_available():
        return None, "no Docker engine answers"
    try:
        from testcontainers.postgres import PostgresContainer
    except ImportError:
        return None, "testcontainers is not installed"
    try:
        container: Any = PostgresContainer(f"postgres:{version}", driver=None)
        container.start()
    except Exception as exc:  # DockerException and friends
        return None, f"testcontainers could not start postgres:{version}: {exc}"
    srv = PgServer(version=version, url=str(container.get_connection_url()))
    srv.cleanup.append(container.stop)
    return srv, ""


def find_server(version: str) -> PgServer:
    """Find or start a PostgreSQL ``version`` server (see the module docstring)."""
    url = env_url(f"postgres{version}")
    if url:
        return PgServer(version=version, url=url)
    generic = env_url("postgres")
    reasons = []
    if generic:
        if _server_major(generic) == version:
            return PgServer(version=version, url=generic)
        reasons.append(f"UWSX_TEST_POSTGRES_URL is not a PostgreSQL {version} server")
    bindir = bindir_for(version)
    if bindir is not None:
        return start_cluster(version, bindir)
    where = (
        "the pgserver wheel" if version == "16" else f"PATH or /usr/lib/postgresql/{version}/bin"
    )
    reasons.append(f"no PostgreSQL {version} initdb/postgres in {where}")
    srv, why = _from_container(version)
    if srv is not None:
        return srv
    reasons.append(why)
    reasons.append(f"set UWSX_TEST_POSTGRES{version}_URL to use a running server")
    missing_backend(f"postgres {version}", "; ".join(reasons))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def throwaway_cluster(version: str = "15") -> Iterator[PgServer]:
    """A private cluster for tests that stop, start or kill the server; needs local binaries."""
    bindir = bindir_for(version)
    if bindir is None:
        missing_backend(f"postgres {version}", "stopping a server needs local PostgreSQL binaries")
        raise AssertionError("unreachable")
    srv = start_cluster(version, bindir)
    try:
        yield srv
    finally:
        srv.close()


def server_fixture(version: str) -> Any:
    """A session-scoped fixture yielding the :class:`PgServer` of ``version``."""

    @pytest.fixture(scope="session")
    def _fixture() -> Iterator[PgServer]:
        srv = find_server(version)
        try:
            yield srv
        finally:
            srv.close()

    return _fixture
