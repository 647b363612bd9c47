"""Prefix scans across every primary (SCAN is per node, so a cluster is scanned node by node)
and page-wise deletion: each page's deletions go out as one batch of single-key operations,
which never trips CROSSSLOT however the keys are spread."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from uwsx_redis._context import Context, number
from uwsx_redis._driver_exec import Op
from uwsx_redis._keys import glob_escape

__all__ = ["delete_matching", "scan_prefix"]

_PAGE = 1000


def _name(raw: object) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "surrogateescape")
    return str(raw)


async def scan_prefix(
    ctx: Context, prefix: str, *, pattern: str | None = None
) -> AsyncIterator[list[str]]:
    """Pages of key names starting with ``prefix`` (or matching ``pattern``), every primary."""
    match = pattern if pattern is not None else glob_escape(prefix) + "*"
    for node in ctx.topology.primaries():
        cursor: bytes | int = 0
        while True:
            op = Op([("SCAN", cursor, "MATCH", match, "COUNT", _PAGE)], node=node, readonly=True)
            reply = (await ctx.executor.run(op))[0]
            cursor, raw = reply[0], reply[1]
            names = [_name(k) for k in raw]
            if names:
                yield names
            if number(cursor) == 0:
                break


async def delete_matching(
    ctx: Context,
    prefix: str,
    *,
    keep: Callable[[str], bool],
    delete: Callable[[str], Op],
) -> int:
    """Delete every key starting with ``prefix`` except those ``keep`` protects; each
    ``delete(key)`` op returns 1 when it removed a live key. Returns how many did."""
    count = 0
    async for page in scan_prefix(ctx, prefix):
        doomed = [k for k in page if k.startswith(prefix) and not keep(k)]
        if not doomed:
            continue
        replies = await ctx.executor.run_all([delete(_wire(k)) for k in doomed])
        count += sum(number(r[0]) for r in replies)
    return count


def _wire(name: str) -> str:
    # Round-trips names that were not valid UTF-8 (surrogateescape) back to their bytes.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape")  # type: ignore[return-value]
    return name
