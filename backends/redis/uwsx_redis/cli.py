"""``uwsx redis-probe URL``: connect and print what the server offers (detected facts and
capabilities), for ``redis://`` and ``valkey://`` URLs alike."""

from __future__ import annotations

import argparse
import asyncio
import json

import uwsx
from uwsx.errors import UwsxError
from uwsx.redact import redact_url

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="redis://, redis+cluster://, valkey://... URL")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")


async def _probe(url: str, timeout: float) -> dict[str, object]:
    backend = await uwsx.connect(url, command_timeout=timeout, connect_timeout=timeout)
    try:
        return {
            "backend": backend.name,
            "url": backend.url,
            "info": dict(backend.info),
            "capabilities": sorted(c.value for c in backend.capabilities),
        }
    finally:
        await backend.close()


def run(args: argparse.Namespace) -> int:
    try:
        facts = asyncio.run(_probe(args.url, args.timeout))
    except (UwsxError, ValueError, TypeError) as exc:
        print(f"cannot probe {redact_url(args.url)}: {exc}")
        return 1
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    info = facts["info"]
    assert isinstance(info, dict)
    print(f"{facts['backend']}  {facts['url']}")
    for key, value in info.items():
        print(f"  {key + ':':17} {value or '-'}")
    capabilities = facts["capabilities"]
    assert isinstance(capabilities, list)
    print(f"  {'capabilities:':17} {', '.join(capabilities) or '-'}")
    return 0
