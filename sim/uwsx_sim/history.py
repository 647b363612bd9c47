"""Jepsen-style operation history and the run's trace hash.

A workload records every feature-level operation as an ``invoke`` followed by exactly one
completion: ``ok`` (it happened), ``fail`` (it certainly did not) or ``info`` (unknown: the
reply was lost, it may have happened). Checkers read the history after the run.

The :class:`Trace` hashes everything that happened (each backend apply with its virtual time,
each fault, each history record) with blake2b. Two runs are the same run exactly when their
hashes match; this is the determinism check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["History", "Op", "OpType", "Trace", "canonical"]

OpType = Literal["invoke", "ok", "fail", "info"]


_PLAIN = frozenset({str, int, float, bool, type(None)})


def canonical(value: object) -> str:
    """A text form independent of hash seeds (sets sorted) for hashing and export."""
    t = type(value)
    if t in _PLAIN:
        return repr(value)
    if (t is tuple or t is list) and all(type(v) in _PLAIN for v in value):  # type: ignore[attr-defined]
        return repr(value)
    if t is dict and all(
        type(k) in _PLAIN and type(v) in _PLAIN
        for k, v in value.items()  # type: ignore[attr-defined]
    ):
        return repr(value)
    if isinstance(value, (str, int, float, bool)):
        return repr(value)
    if isinstance(value, (set, frozenset)):
        return "{" + ",".join(sorted(canonical(v) for v in value)) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{canonical(k)}:{canonical(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if is_dataclass(value):
        return repr(value)
    # other objects' reprs may carry memory addresses, which differ between runs
    return f"<{type(value).__name__}>"


def _jsonable(value: object) -> object:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


@dataclass(slots=True)
class Op:
    """One history record. ``time`` is virtual seconds; ``extra`` holds checker facts such as
    the backend apply time."""

    index: int
    type: OpType
    f: str
    value: Any
    node: str
    incarnation: int
    process: str
    time: float
    extra: dict[str, Any] = field(default_factory=dict)
    #: for completions, the index of the matching invoke
    invoke: int = -1

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "type": self.type,
            "f": self.f,
            "value": _jsonable(self.value),
            "node": self.node,
            "incarnation": self.incarnation,
            "process": self.process,
            "time": round(self.time, 9),
        }
        if self.invoke >= 0:
            out["invoke"] = self.invoke
        if self.extra:
            out.update({k: _jsonable(v) for k, v in self.extra.items()})
        return out


class Trace:
    """The trace hash plus the fault timeline shown in reports."""

    __slots__ = ("_h", "backend_ops", "timeline")

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)
        self.backend_ops = 0
        #: (virtual time, node or "*", symbol, text) of faults and phase changes
        self.timeline: list[tuple[float, str, str, str]] = []

    def backend(self, ticks: int, who: str, text: str) -> None:
        self.backend_ops += 1
        self._h.update(f"{ticks}|{who}|{text}\n".encode())

    def event(self, time: float, node: str, symbol: str, text: str) -> None:
        self.timeline.append((time, node, symbol, text))
        self._h.update(f"E{time:.9f}|{node}|{symbol}|{text}\n".encode())

    def mix(self, text: str) -> None:
        self._h.update(text.encode())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class History:
    """Append-only list of :class:`Op` records, mixed into the trace hash as they arrive."""

    def __init__(self, trace: Trace | None = None) -> None:
        self.ops: list[Op] = []
        self._trace = trace

    def _add(self, op: Op) -> Op:
        self.ops.append(op)
        if self._trace is not None:
            value = op.value
            text = repr(value) if type(value) in _PLAIN else canonical(value)
            self._trace.mix(
                f"H{op.index}|{op.type}|{op.f}|{op.node}#{op.incarnation}|{op.process}|"
                f"{op.time!r}|{text}\n"
            )
        return op

    def invoke(
        self, node: str, incarnation: int, process: str, f: str, value: Any, time: float
    ) -> Op:
        return self._add(Op(len(self.ops), "invoke", f, value, node, incarnation, process, time))

    def complete(self, inv: Op, type: OpType, value: Any, time: float, **extra: Any) -> Op:
        op = Op(
            len(self.ops), type, inv.f, value, inv.node, inv.incarnation, inv.process, time, extra
        )
        op.invoke = inv.index
        return self._add(op)

    def note(
        self,
        node: str,
        incarnation: int,
        process: str,
        f: str,
        value: Any,
        time: float,
        **extra: Any,
    ) -> Op:
        """A completed observation with no separate invoke (a delivery, a view sample)."""
        return self._add(Op(len(self.ops), "ok", f, value, node, incarnation, process, time, extra))

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def pairs(self, f: str | None = None) -> Iterator[tuple[Op, Op | None]]:
        """(invoke, completion or None) for every invocation of ``f`` (all when None)."""
        done: dict[int, Op] = {op.invoke: op for op in self.ops if op.invoke >= 0}
        for op in self.ops:
            if op.type == "invoke" and (f is None or op.f == f):
                yield op, done.get(op.index)

    def write(self, path: Path) -> None:
        """JSONL, or EDN (for Knossos/Elle) when ``path`` ends in ``.edn``."""
        if path.suffix == ".edn":
            self.write_edn(path)
        else:
            self.write_jsonl(path)

    def write_edn(self, path: Path) -> None:
        """One EDN map per line: ``{:index 0 :type :invoke :f :acquire :process "n0/1" ...}``
        with ``:time`` in integer nanoseconds, as Jepsen histories are."""
        with path.open("w", encoding="utf-8") as fh:
            for op in self.ops:
                fields = [
                    f":index {op.index}",
                    f":type :{op.type}",
                    f":f :{_edn_keyword(op.f)}",
                    f":value {_edn(op.value)}",
                    f":process {_edn(op.process)}",
                    f":node {_edn(op.node)}",
                    f":incarnation {op.incarnation}",
                    f":time {round(op.time * 1e9)}",
                ]
                fh.write("{" + ", ".join(fields) + "}\n")

    def write_jsonl(self, path: Path) -> None:
        with path.open("w", encoding="utf-8") as fh:
            for op in self.ops:
                fh.write(json.dumps(op.as_json(), sort_keys=True) + "\n")


def _edn_keyword(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_?!*+." else "-" for c in name) or "_"


def _edn(value: object) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f":{_edn_keyword(str(k))} {_edn(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (set, frozenset)):
        return "#{" + " ".join(sorted(_edn(v) for v in value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_edn(v) for v in value) + "]"
    return json.dumps(canonical(value))
