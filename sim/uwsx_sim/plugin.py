"""The ``uwsx`` entry-point plugin of uwsx-sim: the ``uwsx sim`` command and ``sim://`` URLs.

Imports nothing heavy: the command's modules load when it runs, the backend when a ``sim://``
URL is opened.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from uwsx.hookspecs import hookimpl
from uwsx.ports.backend import Capability
from uwsx.registry import BackendSpec

if TYPE_CHECKING:
    from uwsx.cli_registry import CommandRegistry
    from uwsx.registry import BackendRegistry


def _configure(parser: argparse.ArgumentParser) -> None:
    from uwsx_sim.cli import configure

    configure(parser)


def _run(args: argparse.Namespace) -> int:
    from uwsx_sim.cli import run

    return run(args)


@hookimpl
def uwsx_cli_commands(commands: CommandRegistry) -> None:
    commands.add(
        "sim",
        help="deterministic cluster simulation: run, explore and replay fault scenarios",
        configure=_configure,
        run=_run,
    )


@hookimpl
def uwsx_register_backends(registry: BackendRegistry) -> None:
    registry.register(
        BackendSpec(
            name="sim",
            schemes=("sim",),
            factory="uwsx_sim.model.open:open_backend",
            dist="uwsx-sim",
            capabilities=frozenset(
                {Capability.SHARDED_PUBSUB, Capability.KEY_EXPIRY_EVENTS, Capability.SESSION_LOCKS}
            ),
            description="the simulator's model of a backend: the memory backend behind a "
            "simulated network link (only inside a uwsx_sim run or under the SimLoop)",
        )
    )
