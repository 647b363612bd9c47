"""Test bodies shared by the SortedLog and Stream contracts.

A stream *is* a sorted log (with approximate trimming and idempotent append), so both contracts
run the same bodies. :func:`bind_log_cases` installs each body on a contract class as a test
named for that port (``test_log_*`` / ``test_stream_*``): distinct names keep both sets when a
class inherits both contracts (:class:`~uwsx.testing.contract.AllPortsContract`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from uwsx.errors import InvalidNameError, UnsupportedBackendError
from uwsx.ports.backend import Backend, Capability
from uwsx.ports.sorted_log import SortedLog
from uwsx.testing.contract._base import (
    INVALID_SPACE_NAMES,
    BackendOpener,
    ContractBase,
    bad_input,
    gather,
)

__all__ = ["LogSubject", "bind_log_cases"]


@dataclass(frozen=True, slots=True)
class LogSubject:
    """The port one shared body runs against.

    :param port: the port of the test's ``backend`` (default space).
    :param other: opens another client and returns its port (same prefix unless given).
    :param exact_trim: True when ``max_size`` is exact (SortedLog), False when a backend may
        keep more entries (Stream).
    :param attr: the port's attribute name on a Backend (``log`` / ``stream``).
    """

    port: SortedLog
    other: Callable[..., Awaitable[SortedLog]]
    exact_trim: bool
    attr: str
    capabilities: frozenset[Capability]


Case = Callable[[ContractBase, LogSubject], Awaitable[None]]
_CASES: dict[str, Case] = {}


def _case(fn: Case) -> Case:
    _CASES[fn.__name__] = fn
    return fn


def _data(i: int) -> str:
    return json.dumps({"i": i, "text": "é✓"})


@_case
async def append_assigns_consecutive_seqs(t: ContractBase, s: LogSubject) -> None:
    """Appends get seqs 1, 2, 3... and are fresh (not duplicates, no replica count)."""
    name = t.unique("log")
    got = [await s.port.append(name, "e", _data(i), max_size=10) for i in range(5)]
    assert [a.seq for a in got] == [1, 2, 3, 4, 5]
    assert not any(a.duplicate for a in got)
    assert all(a.replicas is None for a in got), "replicas is only set when a wait was asked"


@_case
async def read_after_returns_entries_in_order(t: ContractBase, s: LogSubject) -> None:
    """Entries come back in seq order with event and data exactly as appended."""
    name = t.unique("log")
    assert await s.port.read_after(name, 0) == []
    for i in range(1, 4):
        await s.port.append(name, f"ev{i}", _data(i), max_size=10)
    entries = await s.port.read_after(name, 0)
    assert [(e.seq, e.event, e.data) for e in entries] == [
        (i, f"ev{i}", _data(i)) for i in range(1, 4)
    ]


@_case
async def read_after_filters_and_limits(t: ContractBase, s: LogSubject) -> None:
    """``after`` excludes seqs up to it; ``limit`` keeps the oldest matching entries."""
    name = t.unique("log")
    for i in range(1, 7):
        await s.port.append(name, "e", _data(i), max_size=10)
    assert [e.seq for e in await s.port.read_after(name, 3)] == [4, 5, 6]
    assert [e.seq for e in await s.port.read_after(name, 1, limit=2)] == [2, 3]
    assert [e.seq for e in await s.port.read_after(name, -5, limit=1)] == [1]
    assert await s.port.read_after(name, 6) == []
    assert await s.port.read_after(name, 100) == []


@_case
async def bounds_of_unknown_log(t: ContractBase, s: LogSubject) -> None:
    """A log never appended to has no oldest entry and a counter of 0."""
    bounds = await s.port.bounds(t.unique("log"))
    assert (bounds.oldest, bounds.newest) == (None, 0)
    assert isinstance(bounds.epoch, str)


@_case
async def bounds_track_oldest_and_newest(t: ContractBase, s: LogSubject) -> None:
    """``bounds`` reports the oldest stored seq and the counter; the epoch stays put."""
    name = t.unique("log")
    await s.port.append(name, "e", _data(1), max_size=10)
    first = await s.port.bounds(name)
    assert (first.oldest, first.newest) == (1, 1)
    for i in range(2, 5):
        await s.port.append(name, "e", _data(i), max_size=10)
    later = await s.port.bounds(name)
    assert (later.oldest, later.newest) == (1, 4)
    assert later.epoch == first.epoch, "the epoch changes only when appends may have been lost"
    assert later.epoch


@_case
async def trim_keeps_the_newest_entries(t: ContractBase, s: LogSubject) -> None:
    """``max_size`` keeps the newest entries (exactly, or at least that many on a stream)."""
    name = t.unique("log")
    for i in range(1, 9):
        await s.port.append(name, "e", _data(i), max_size=3)
    seqs = [e.seq for e in await s.port.read_after(name, 0)]
    bounds = await s.port.bounds(name)
    assert bounds.newest == 8
    if s.exact_trim:
        assert seqs == [6, 7, 8]
    else:
        assert len(seqs) >= 3, "a stream never keeps fewer than max_size entries"
        assert seqs == list(range(seqs[0], 9)), seqs
    assert bounds.oldest == seqs[0]


@_case
async def entries_expire_but_counter_survives(t: ContractBase, s: LogSubject) -> None:
    """With ``ttl`` the entries expire; the counter does not, so seqs never restart."""
    name = t.unique("log")
    for i in range(1, 4):
        await s.port.append(name, "e", _data(i), max_size=10, ttl=0.1)
    await t.eventually(lambda: s.port.bounds(name), lambda b: b.oldest is None, "entry expiry")
    assert await s.port.read_after(name, 0) == []
    assert (await s.port.bounds(name)).newest == 3
    assert (await s.port.append(name, "e", _data(4), max_size=10)).seq == 4


@_case
async def delete_removes_entries_and_counter(t: ContractBase, s: LogSubject) -> None:
    """After ``delete`` the log is as new: the next append gets seq 1."""
    name = t.unique("log")
    await s.port.delete(name)
    for i in range(1, 3):
        await s.port.append(name, "e", _data(i), max_size=10)
    await s.port.delete(name)
    bounds = await s.port.bounds(name)
    assert (bounds.oldest, bounds.newest) == (None, 0)
    assert await s.port.read_after(name, 0) == []
    assert (await s.port.append(name, "e", _data(1), max_size=10)).seq == 1


@_case
async def delete_prefix_removes_matching_logs(t: ContractBase, s: LogSubject) -> None:
    """``delete_prefix`` deletes (and counts) logs whose name starts with the prefix."""
    base = t.unique("dp") + ":"
    for name in ("room:1:a", "room:1:b", "room:10", "room:2"):
        await s.port.append(base + name, "e", _data(0), max_size=10)
    assert await s.port.delete_prefix(base + "room:1:") == 2
    assert (await s.port.bounds(base + "room:1:a")).newest == 0
    assert (await s.port.bounds(base + "room:10")).newest == 1
    assert (await s.port.bounds(base + "room:2")).newest == 1
    assert await s.port.delete_prefix(base + "none:") == 0


@_case
async def logs_are_independent(t: ContractBase, s: LogSubject) -> None:
    """Each log name has its own counter and entries."""
    one, two = t.unique("log"), t.unique("log")
    await s.port.append(one, "e", _data(1), max_size=10)
    await s.port.append(one, "e", _data(2), max_size=10)
    assert (await s.port.append(two, "e", _data(1), max_size=10)).seq == 1
    assert [e.seq for e in await s.port.read_after(two, 0)] == [1]


@_case
async def key_prefix_isolates_logs(t: ContractBase, s: LogSubject) -> None:
    """Two prefixes never share a log, even under the same name."""
    name = t.unique("log")
    mine = await s.other(key_prefix="one:")
    theirs = await s.other(key_prefix="two:")
    await mine.append(name, "e", _data(1), max_size=10)
    await mine.append(name, "e", _data(2), max_size=10)
    assert (await theirs.append(name, "e", _data(9), max_size=10)).seq == 1
    assert [e.data for e in await theirs.read_after(name, 0)] == [_data(9)]
    await theirs.delete(name)
    assert (await mine.bounds(name)).newest == 2


@_case
async def spaces_are_independent(t: ContractBase, s: LogSubject) -> None:
    """``space(name)`` is a separate namespace; invalid names raise InvalidNameError."""
    spaced = s.port.space(t.uwsx_space(s.attr))
    name = t.unique("log")
    await s.port.append(name, "default", _data(1), max_size=10)
    await s.port.append(name, "default", _data(2), max_size=10)
    assert (await spaced.append(name, "spaced", _data(3), max_size=10)).seq == 1
    assert [e.event for e in await spaced.read_after(name, 0)] == ["spaced"]
    again = s.port.space(t.uwsx_space(s.attr))
    assert (await again.bounds(name)).newest == 1, "one space name is one namespace"
    assert (await s.port.bounds(name)).newest == 2
    for bad in (*INVALID_SPACE_NAMES, None):
        with pytest.raises(InvalidNameError):
            s.port.space(bad)  # type: ignore[arg-type]


@_case
async def replica_wait_needs_the_capability(t: ContractBase, s: LogSubject) -> None:
    """``replicas=`` works with ``replica_wait`` and raises UnsupportedBackendError without."""
    name = t.unique("log")
    if Capability.REPLICA_WAIT in s.capabilities:
        appended = await s.port.append(name, "e", _data(1), max_size=10, replicas=(0, 1.0))
        assert appended.seq == 1
        assert isinstance(appended.replicas, int)
        assert appended.replicas >= 0
        return
    with pytest.raises(UnsupportedBackendError):
        await s.port.append(name, "e", _data(1), max_size=10, replicas=(1, 0.1))
    assert (await s.port.bounds(name)).newest == 0, "a refused append must not be applied"


@_case
async def rejects_bad_input(t: ContractBase, s: LogSubject) -> None:
    """Bad arguments raise ValueError/TypeError naming the argument and store nothing."""
    port, name = s.port, t.unique("log")
    with bad_input("log", ValueError):
        await port.append("", "e", "{}", max_size=10)
    with bad_input("log", TypeError):
        await port.append(1, "e", "{}", max_size=10)  # type: ignore[arg-type]
    with bad_input("event", TypeError):
        await port.append(name, 1, "{}", max_size=10)  # type: ignore[arg-type]
    with bad_input("data", TypeError):
        await port.append(name, "e", {"a": 1}, max_size=10)  # type: ignore[arg-type]
    bad_sizes: list[Any] = [0, -1, 1.5, True, None]
    for size in bad_sizes:
        with bad_input("max_size"):
            await port.append(name, "e", "{}", max_size=size)
    for ttl in (0, -1.0, float("inf")):
        with bad_input("ttl", ValueError):
            await port.append(name, "e", "{}", max_size=10, ttl=ttl)
    with bad_input("after", TypeError):
        await port.read_after(name, "0")  # type: ignore[arg-type]
    for limit in (0, -1):
        with bad_input("limit", ValueError):
            await port.read_after(name, 0, limit=limit)
    with bad_input("log", ValueError):
        await port.bounds("")
    assert (await port.bounds(name)).newest == 0


@_case
async def concurrent_appends_have_no_gap_or_duplicate(t: ContractBase, s: LogSubject) -> None:
    """250 appends from 5 clients get seqs 1..250, each entry stored under its own seq."""
    name = t.unique("log")
    ports = [await s.other() for _ in range(t.uwsx_clients)]
    per_client = 250 // len(ports)
    results = await gather(
        port.append(name, "e", _data(c * 1000 + j), max_size=1000)
        for c, port in enumerate(ports)
        for j in range(per_client)
    )
    total = per_client * len(ports)
    seqs = sorted(r.seq for r in results)
    assert seqs == list(range(1, total + 1)), "concurrent appends left a gap or a duplicate"
    by_seq = {
        r.seq: _data(c * 1000 + j)
        for (c, j), r in zip(
            ((c, j) for c in range(len(ports)) for j in range(per_client)), results, strict=True
        )
    }
    entries = await s.port.read_after(name, 0)
    assert [(e.seq, e.data) for e in entries] == sorted(by_seq.items())
    assert (await s.port.bounds(name)).newest == total


def bind_log_cases(cls: type[ContractBase], attr: str, *, exact_trim: bool) -> None:
    """Install every shared body on ``cls`` as ``test_<attr>_<body name>``, run against
    ``backend.<attr>``."""
    for name, case in _CASES.items():
        test = _make_test(case, attr, exact_trim)
        test.__name__ = f"test_{attr}_{name}"
        test.__qualname__ = f"{cls.__qualname__}.{test.__name__}"
        test.__doc__ = case.__doc__
        setattr(cls, test.__name__, test)


def _make_test(case: Case, attr: str, exact_trim: bool) -> Callable[..., Awaitable[None]]:
    async def test(self: ContractBase, backend: Backend, open_backend: BackendOpener) -> None:
        async def other(key_prefix: str | None = None) -> SortedLog:
            prefix = None if key_prefix is None else backend.key_prefix + key_prefix
            client = await open_backend(key_prefix=prefix)
            port: SortedLog | None = getattr(client, attr)
            assert port is not None
            return port

        port: SortedLog | None = getattr(backend, attr)
        assert port is not None, f"backend {backend.name!r} offers no {attr} port"
        subject = LogSubject(port, other, exact_trim, attr, backend.capabilities)
        await case(self, subject)

    return test
