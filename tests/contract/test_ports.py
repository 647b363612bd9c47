"""The whole port contract on the backend under test: ``memory://`` unless ``--uwsx-backend``."""

from __future__ import annotations

from uwsx.testing.contract import AllPortsContract


class TestAllPorts(AllPortsContract):
    """Every port of the backend named by ``--uwsx-backend`` (default: a fresh memory store)."""
