"""Pure pieces of the adapter that need no server: key layout and escaping, version and
capability rules, script sources, function library names."""

from __future__ import annotations

import fnmatch

import pytest

from uwsx.ports.backend import Capability
from uwsx.ports.checks import colocate
from uwsx_redis._caps import ServerFacts, capabilities, parse_info, parse_version
from uwsx_redis._keys import Keyspace, glob_escape, tag_of, untag
from uwsx_redis._scripts import ALL_SCRIPTS, script
from uwsx_redis.functions import library_name


@pytest.mark.parametrize("name", ["chat", "a{b}c", "}x", "%7B", "100%", "*?[]\\", "é✓"])
def test_log_keys_share_one_tag_and_parse_back(name: str) -> None:
    keys = Keyspace("app:").log("uwsx_log", name)
    for key in (keys.counter, keys.entries, keys.stream, keys.producers, keys.dedup("p{1}")):
        assert key.startswith("app:__uwsx__:uwsx_log:" + colocate(name))
        assert tag_of(key[len("app:__uwsx__:uwsx_log:") :]) == name


@pytest.mark.parametrize(
    ("prefix", "name", "matches"),
    [
        ("room:", "room:1", True),
        ("room:1", "room:10", True),
        ("room:1:", "room:10", False),
        ("a{", "a{b}", True),
        ("a%", "a%7B", True),
        ("a%7B", "a{", False),
        ("*", "x", False),
        ("", "anything", True),
    ],
)
def test_log_pattern_matches_exactly_the_names_with_the_prefix(
    prefix: str, name: str, matches: bool
) -> None:
    space = Keyspace("p:")
    pattern = space.log_pattern("s", prefix)
    key = space.log("s", name).counter
    assert fnmatch.fnmatchcase(key, _redis_glob_to_fnmatch(pattern)) is matches


def _redis_glob_to_fnmatch(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append("[" + pattern[i + 1] + "]")
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def test_glob_escape_and_untag() -> None:
    assert glob_escape("a*b?c[d]e\\") == "a\\*b\\?c\\[d\\]e\\\\"
    assert untag("%7Ba%7D%25") == "{a}%"
    assert tag_of("no-tag") is None
    assert tag_of("{open") is None


def test_lock_and_queue_keys_are_reserved_and_tagged() -> None:
    space = Keyspace("p:")
    lease, fence = space.lock("res{1}")
    assert lease.endswith(":l")
    assert fence.endswith(":f")
    assert lease[: -len(":l")] == fence[: -len(":f")]
    assert space.is_reserved(lease)
    assert not space.is_reserved("p:user-key")


def test_versions_and_flavours() -> None:
    assert parse_version("7.0.15") == (7, 0, 15)
    assert parse_version("8") == (8, 0, 0)
    with pytest.raises(ValueError):
        parse_version("")
    info = parse_info(
        "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.2\r\n"
    )
    facts = ServerFacts.from_info(
        info, [{"connected_slaves": "1"}], cluster=False, keyspace_events="Ex"
    )
    assert (facts.flavor, facts.version) == ("valkey", (9, 1, 2))
    assert facts.field_ttl
    assert capabilities(facts) == {
        Capability.DURABLE,
        Capability.SHARDED_PUBSUB,
        Capability.SERVER_FUNCTIONS,
        Capability.KEY_EXPIRY_EVENTS,
        Capability.REPLICA_WAIT,
    }
    old = ServerFacts.from_info(
        {"redis_version": "6.2.14"},
        [{}, {"connected_slaves": "2"}],
        cluster=True,
        keyspace_events="",
    )
    assert (old.flavor, old.mode, old.primaries, old.min_replicas) == ("redis", "cluster", 2, 0)
    assert not old.field_ttl
    assert capabilities(old) == {Capability.DURABLE}
    assert Capability.REPLICA_WAIT in capabilities(old, replica_wait=True)
    redis74 = ServerFacts.from_info(
        {"redis_version": "7.4.0"}, [{}], cluster=False, keyspace_events="KA"
    )
    assert redis74.field_ttl
    assert not redis74.expiry_events, "keyspace (K) notifications without keyevent (E)"


def test_every_script_has_a_header_and_a_stable_sha() -> None:
    for name in ALL_SCRIPTS:
        loaded = script(name)
        assert loaded.source.lstrip().startswith("--"), f"{name}.lua starts with its header"
        assert len(loaded.sha) == 40
        assert script(name) is loaded


def test_library_names() -> None:
    assert library_name("#!lua name=ws-presence\nreturn 1") == "ws-presence"
    for bad in ("", "return 1", "#!js name=x"):
        with pytest.raises(ValueError):
            library_name(bad)
