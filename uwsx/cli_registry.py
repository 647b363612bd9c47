"""The object ``uwsx_cli_commands`` hooks add subcommands to."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Command", "CommandRegistry"]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class CommandRegistry:
    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(
        self,
        name: str,
        *,
        help: str,
        configure: Callable[[argparse.ArgumentParser], None],
        run: Callable[[argparse.Namespace], int],
    ) -> None:
        if name in self._commands:
            raise ValueError(f"uwsx subcommand {name!r} is registered twice")
        self._commands[name] = Command(name, help, configure, run)

    def commands(self) -> list[Command]:
        return [self._commands[k] for k in sorted(self._commands)]
