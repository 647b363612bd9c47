"""Registers the Redis backend (entry point ``redis`` in the ``uwsx`` group).

Imports nothing heavy: the factory is a lazy reference, so ``redis`` (the driver) is imported
only when a ``redis://`` URL is opened.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from uwsx.hookspecs import hookimpl
from uwsx.ports.backend import Capability
from uwsx.registry import BackendRegistry, BackendSpec

if TYPE_CHECKING:
    from uwsx.cli_registry import CommandRegistry

__all__ = ["CAPABILITIES", "PORTS", "uwsx_cli_commands", "uwsx_register_backends"]

#: Ports the adapter provides (session locks are not offered: see RedisLocks).
PORTS = frozenset({"kv", "log", "stream", "pubsub", "locks", "queue"})

#: Capabilities a server may offer; the connected one is detected (Backend.capabilities).
CAPABILITIES = frozenset(
    {
        Capability.SHARDED_PUBSUB,
        Capability.KEY_EXPIRY_EVENTS,
        Capability.REPLICA_WAIT,
        Capability.SERVER_FUNCTIONS,
        Capability.DURABLE,
    }
)


@hookimpl
def uwsx_register_backends(registry: BackendRegistry) -> None:
    registry.register(
        BackendSpec(
            name="redis",
            schemes=("redis", "rediss", "redis+cluster", "rediss+cluster"),
            factory="uwsx_redis.backend:open_backend",
            dist="uwsx-redis",
            ports=PORTS,
            capabilities=CAPABILITIES,
            client_types=("redis.asyncio.client.Redis", "redis.asyncio.cluster.RedisCluster"),
            install_hint="pip install uwsx-redis",
            description="Redis 7+ standalone or cluster: Lua-atomic ports, hash-tagged keys, "
            "capabilities detected from the server",
        )
    )


def _probe_configure(parser: argparse.ArgumentParser) -> None:
    from uwsx_redis.cli import configure

    configure(parser)


def _probe_run(args: argparse.Namespace) -> int:
    from uwsx_redis.cli import run

    return run(args)


@hookimpl
def uwsx_cli_commands(commands: CommandRegistry) -> None:
    commands.add(
        "redis-probe",
        help="connect to a Redis/Valkey URL and show the detected server and capabilities",
        configure=_probe_configure,
        run=_probe_run,
    )
