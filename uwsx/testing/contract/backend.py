"""The Backend bundle contract: identity, namespace, declared capabilities, closing."""

from __future__ import annotations

from collections.abc import Mapping

from uwsx.ports.backend import PORT_NAMES, Backend, Capability
from uwsx.testing.contract._base import BackendOpener, ContractBase

__all__ = ["BackendContract"]


class BackendContract(ContractBase):
    """What every :class:`uwsx.ports.Backend` reports about itself."""

    async def test_backend_reports_its_key_prefix(
        self, backend: Backend, uwsx_key_prefix: str
    ) -> None:
        assert backend.key_prefix == uwsx_key_prefix

    async def test_backend_describes_itself(self, backend: Backend) -> None:
        assert isinstance(backend.name, str)
        assert backend.name
        assert isinstance(backend.url, str)
        assert isinstance(backend.info, Mapping)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in backend.info.items())
        assert isinstance(backend.capabilities, frozenset)
        assert all(isinstance(c, Capability) for c in backend.capabilities)

    async def test_backend_functions_match_the_capability(self, backend: Backend) -> None:
        has = Capability.SERVER_FUNCTIONS in backend.capabilities
        assert (backend.functions is not None) == has

    async def test_backend_offers_ports_or_none(self, backend: Backend) -> None:
        offered = [name for name in PORT_NAMES if getattr(backend, name) is not None]
        assert offered, "a backend offers at least one port"

    async def test_backend_close_is_idempotent(self, open_backend: BackendOpener) -> None:
        client = await open_backend()
        await client.close()
        await client.close()

    async def test_backend_is_an_async_context_manager(self, open_backend: BackendOpener) -> None:
        client = await open_backend()
        async with client as entered:
            assert entered is client
        await client.close()
