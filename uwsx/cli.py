"""The ``uwsx`` command. Built-in: ``backends``; plugins add more (``uwsx sim`` ...)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from uwsx import __version__
from uwsx.cli_registry import CommandRegistry
from uwsx.plugins import get_commands, plugin_errors

__all__ = ["main"]


def _backends_configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _backends_run(args: argparse.Namespace) -> int:
    from uwsx.connect import installed_backends

    rows = installed_backends()
    errors = plugin_errors()
    if args.json:
        print(json.dumps({"backends": rows, "plugin_errors": errors}, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']}  ({row['dist']} {row['version']})")
        print(f"  schemes:      {', '.join(s + '://' for s in row['schemes'])}")
        print(f"  ports:        {', '.join(row['ports'])}")
        print(f"  capabilities: {', '.join(row['capabilities']) or '-'}")
        if row["description"]:
            print(f"  {row['description']}")
    for name, error in errors.items():
        print(f"plugin {name!r} failed to load: {error}", file=sys.stderr)
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, CommandRegistry]:
    parser = argparse.ArgumentParser(prog="uwsx", description=__doc__)
    parser.add_argument("--version", action="version", version=f"uwsx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = get_commands()
    commands.add(
        "backends",
        help="list installed backends, their schemes, ports and capabilities",
        configure=_backends_configure,
        run=_backends_run,
    )
    for command in commands.commands():
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure(child)
        child.set_defaults(_run=command.run)
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        status: int = run(args)
    except BrokenPipeError:
        # The reader went away (``uwsx sim list | head``): not an error worth a traceback.
        sys.stderr.close()
        return 0
    return status


if __name__ == "__main__":
    raise SystemExit(main())
