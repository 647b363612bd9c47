"""Every pluggy hook uwsx defines. Plugins implement them with :data:`hookimpl`.

Distributions register a module (or object) under the entry-point group ``uwsx``::

    [project.entry-points.uwsx]
    redis = "uwsx_redis.plugin"

The module must import nothing heavy: backends name their factory as a lazy ``"pkg.mod:attr"``
string, imported only when a URL of that scheme is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from uwsx.cli_registry import CommandRegistry
    from uwsx.registry import BackendRegistry

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("uwsx")
hookimpl = pluggy.HookimplMarker("uwsx")


@hookspec
def uwsx_register_backends(registry: BackendRegistry) -> None:
    """Add :class:`~uwsx.registry.BackendSpec` objects to ``registry``.

    Called once per process, the first time a backend is resolved or listed.

    :param registry: call ``registry.register(BackendSpec(...))`` for each backend.
    """


@hookspec
def uwsx_cli_commands(commands: CommandRegistry) -> None:
    """Add subcommands to the ``uwsx`` command line.

    :param commands: call ``commands.add(name, help=..., configure=..., run=...)``; ``configure``
        receives the subcommand's :class:`argparse.ArgumentParser`, ``run`` the parsed
        :class:`argparse.Namespace` and returns the exit status.
    """
