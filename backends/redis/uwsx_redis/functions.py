"""``RedisFunctions``: server-side function libraries (FUNCTION LOAD / FCALL), capability
``server_functions`` (Redis 7+, Valkey). On a cluster ``load`` and ``delete`` act on every
primary, because each node keeps its own function registry. Keys passed to ``call`` get the
backend's key prefix like every other key, and must share a slot on a cluster."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from uwsx.errors import BackendError
from uwsx.ports.checks import check_key
from uwsx_redis._context import Context, text
from uwsx_redis._driver_exec import Op

__all__ = ["RedisFunctions", "library_name"]

_SHEBANG = re.compile(r"^#!lua\s+name=([A-Za-z0-9_\-]+)")


def library_name(code: object) -> str:
    """The library name from the ``#!lua name=<lib>`` first line."""
    if not isinstance(code, str) or not code:
        raise ValueError("code must be a non-empty string")
    match = _SHEBANG.match(code)
    if match is None:
        raise ValueError("code must start with `#!lua name=<libname>` shebang")
    return match.group(1)


def _plain(value: Any) -> Any:
    """A reply with bytes decoded to str, recursively."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class RedisFunctions:
    """The ServerFunctions port (see :class:`uwsx.ports.ServerFunctions`)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def load(self, code: str, *, replace: bool = False) -> str:
        name = library_name(code)
        cmd = ("FUNCTION", "LOAD", "REPLACE", code) if replace else ("FUNCTION", "LOAD", code)
        ops = [Op([cmd], node=node) for node in self._ctx.topology.primaries()]
        await self._ctx.executor.run_all(ops)
        return name

    async def call(
        self, function: str, *, keys: Sequence[str] = (), args: Sequence[str | int | float] = ()
    ) -> object:
        check_key(function, "function")
        if isinstance(keys, str) or isinstance(args, str):
            raise TypeError("keys and args must be sequences, not a str")
        full = [self._ctx.keys.kv(check_key(k)) for k in keys]
        self._ctx.check_colocated(full, f"FCALL {function}")
        plain_args: list[str | int | float] = []
        for arg in args:
            if isinstance(arg, bool) or not isinstance(arg, str | int | float):
                raise TypeError(f"function args must be str, int or float, got {arg!r}")
            plain_args.append(arg)
        op = Op(
            [("FCALL", function, len(full), *full, *plain_args)], route=full[0] if full else None
        )
        return _plain((await self._ctx.executor.run(op))[0])

    async def delete(self, library: str) -> bool:
        check_key(library, "library")
        ops = [
            Op([("FUNCTION", "DELETE", library)], node=node, tolerate=True)
            for node in self._ctx.topology.primaries()
        ]
        deleted = False
        for (reply,) in await self._ctx.executor.run_all(ops):
            if isinstance(reply, BaseException):
                if "not found" in str(reply).lower():
                    continue
                raise BackendError(f"Redis error: {reply}")
            deleted = True
        return deleted

    async def list(self) -> list[str]:
        op = Op([("FUNCTION", "LIST")], node=self._ctx.topology.default(), readonly=True)
        reply = (await self._ctx.executor.run(op))[0]
        names = []
        for lib in reply:
            fields = {text(lib[i]): lib[i + 1] for i in range(0, len(lib), 2)}
            names.append(text(fields["library_name"]))
        return sorted(names)
