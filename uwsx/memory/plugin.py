"""Registers the memory backend (entry point ``memory`` in the ``uwsx`` group)."""

from __future__ import annotations

from uwsx.hookspecs import hookimpl
from uwsx.ports.backend import Capability
from uwsx.registry import BackendRegistry, BackendSpec


@hookimpl
def uwsx_register_backends(registry: BackendRegistry) -> None:
    registry.register(
        BackendSpec(
            name="memory",
            schemes=("memory",),
            factory="uwsx.memory.backend:open_backend",
            dist="uwsx",
            capabilities=frozenset(
                {Capability.SHARDED_PUBSUB, Capability.KEY_EXPIRY_EVENTS, Capability.SESSION_LOCKS}
            ),
            description="in-process store shared by name; the embedded default and the "
            "simulator's backend",
        )
    )
