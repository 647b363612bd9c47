"""Registers the Valkey backend (entry point ``valkey`` in the ``uwsx`` group); the factory
is imported lazily, like the Redis one."""

from __future__ import annotations

from uwsx.hookspecs import hookimpl
from uwsx.registry import BackendRegistry, BackendSpec
from uwsx_redis.plugin import CAPABILITIES, PORTS

__all__ = ["uwsx_register_backends"]


@hookimpl
def uwsx_register_backends(registry: BackendRegistry) -> None:
    registry.register(
        BackendSpec(
            name="valkey",
            schemes=("valkey", "valkeys", "valkey+cluster", "valkeys+cluster"),
            factory="uwsx_valkey.backend:open_backend",
            dist="uwsx-valkey",
            ports=PORTS,
            capabilities=CAPABILITIES,
            install_hint="pip install uwsx-valkey",
            description="Valkey 7.2+ standalone or cluster (the Redis adapter, Valkey-aware "
            "server detection; native field expiry on Valkey 9)",
        )
    )
