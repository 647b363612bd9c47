"""Throwaway TLS material for integration servers: a private CA and a server certificate for
``127.0.0.1`` / ``localhost``, made with the ``openssl`` command line (on every Debian).

The CA is trusted by nothing but the tests that pass its path to a client (``ssl_ca_certs``), so
a client that does not is refused by certificate verification, as a real deployment would be.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.integration.harness import missing_backend, which

__all__ = ["TlsFiles", "make_certificates"]

_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the CA certificate, and of the server's certificate and private key."""

    ca: Path
    cert: Path
    key: Path

    def server_args(self) -> list[str]:
        """``redis-server`` / ``valkey-server`` options serving TLS with these files (clients
        are not asked for a certificate of their own)."""
        return [
            "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "no",
        ]  # fmt: skip


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certificates(workdir: Path) -> TlsFiles:
    """A CA and a server certificate signed by it, valid for two days, in ``workdir``."""
    if which("openssl") is None:
        missing_backend("TLS", "the openssl command line is needed to make test certificates")
        raise AssertionError("unreachable")
    workdir.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", *_CURVE, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=uwsx test CA", cwd=workdir,
    )  # fmt: skip
    _openssl(
        "req", *_CURVE, "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1", cwd=workdir,
    )  # fmt: skip
    (workdir / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf",
        cwd=workdir,
    )  # fmt: skip
    return TlsFiles(ca=workdir / "ca.crt", cert=workdir / "server.crt", key=workdir / "server.key")
