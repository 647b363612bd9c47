"""The Redis adapter's RESP packer writes exactly the bytes redis-py's ``pack_commands`` writes
(how the request is split into chunks may differ; the byte stream may not)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from uwsx_redis._driver_wire import pack

_CUT = 6000


def _conn() -> Any:
    return Connection(host="127.0.0.1", port=1)  # never connected: packing only


def _same(commands: list[tuple[Any, ...]]) -> None:
    conn = _conn()
    ours = b"".join(bytes(c) for c in pack(conn, commands))
    theirs = b"".join(bytes(c) for c in conn.pack_commands(commands))
    assert ours == theirs


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", ""),
        ("SET", b"", b""),
        ("SET", "ключ", "värde ✓ 😀"),
        ("SET", "k", "\x00\r\n$*"),
        ("INCRBY", "k", -1),
        ("INCRBY", "k", 0),
        ("INCRBY", "k", -(2**63)),
        ("INCRBY", "k", 2**64 + 1),
        ("INCRBY", "k", -(10**4299)),
        ("SET", "k", b"x" * (_CUT - 1)),
        ("SET", "k", b"x" * _CUT),
        ("SET", "k", b"x" * (_CUT + 1)),
        ("SET", "k", "é" * _CUT),
        ("SET", "k", "x" * (3 * _CUT)),
        ("SET", "k", 1.5),
        ("SET", "k", float("inf")),
        ("SET", "k", memoryview(b"view" * 2000)),
        ("SET", "k", memoryview(b"")),
        ("CONFIG GET", "maxmemory"),
        (b"SET", "k", "v"),
    ],
)
def test_one_command_matches_redis_py(args: tuple[Any, ...]) -> None:
    _same([args])


def test_several_commands_with_big_and_small_arguments_match() -> None:
    big = b"y" * (_CUT + 10)
    _same(
        [
            ("SET", "a", big),
            ("GET", "a"),
            ("EVALSHA", "0" * 40, 2, "k1", "k2", big, -5, "ü"),
            ("SET", "b", "x" * (_CUT - 2)),
            ("SET", "c", "x" * (_CUT - 2)),
            ("SET", "d", 3.25),  # a float anywhere: redis-py packs the whole request
        ]
    )


def test_arguments_redis_py_refuses_are_refused() -> None:
    conn = _conn()
    with pytest.raises(DataError):
        pack(conn, [("SET", "k", True)])
    with pytest.raises(ValueError):
        pack(conn, [("SET", "k", 10**5000)])
    with pytest.raises(UnicodeEncodeError):
        pack(conn, [("SET", "k", "\ud800")])


_arg = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.sampled_from([b"z" * (_CUT - 1), b"z" * _CUT, "ž" * (_CUT // 2), b"q" * (_CUT * 2)]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["SET", "EVALSHA", "HSET"]), st.lists(_arg, max_size=6)),
        min_size=1,
        max_size=5,
    )
)
def test_random_requests_match_redis_py(raw: list[tuple[str, list[Any]]]) -> None:
    _same([(name, *args) for name, args in raw])
