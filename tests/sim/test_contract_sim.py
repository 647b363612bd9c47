"""The sim arm of the port contract suite: the backend model behind fault-free simulated links
must keep every promise the ports make, under the virtual-time loop (SIMULATOR.md B.11.9)."""

from __future__ import annotations

import pytest

from uwsx.testing.contract import AllPortsContract


class TestAllPortsSim(AllPortsContract):
    """Every port through ``sim://``: memory backend, simulated network, SimLoop."""

    @pytest.fixture
    def uwsx_backend_target(self, uwsx_key_prefix: str) -> str:
        return "sim://contract-" + uwsx_key_prefix.rstrip(":")
