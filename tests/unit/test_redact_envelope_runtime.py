"""URL/data redaction, envelope validation and the runtime's task groups."""

from __future__ import annotations

import asyncio

import pytest

from uwsx import _runtime
from uwsx.features._envelope import EnvelopeValidator, is_valid_bus_topic
from uwsx.redact import redact_url, strip_internal


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@redis.internal:6379", "redis://:***@redis.internal:6379"),
        (
            "postgres://user:p@ssword@db.internal:5432/main",
            "postgres://user:***@db.internal:5432/main",
        ),
        ("redis://user:secret@[2001:db8::1]:6379", "redis://user:***@[2001:db8::1]:6379"),
        ("redis://user:@host:6379", "redis://user:@host:6379"),
        ("postgres://app@db/x", "postgres://app@db/x"),
        (
            "postgres://host/db?sslmode=require&password=hunter2&application_name=foo",
            "postgres://host/db?sslmode=require&password=***&application_name=foo",
        ),
        ("postgres://host/db?passthrough=1", "postgres://host/db?passthrough=1"),
        ("redis://host/path#anchor?password=x", "redis://host/path#anchor?password=x"),
        (
            "postgres://app:secret@db:5432/main?application_name=foo@svc",
            "postgres://app:***@db:5432/main?application_name=foo@svc",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_non_strings() -> None:
    assert (redact_url(None), redact_url(42), redact_url("")) == ("None", "42", "")


def test_strip_internal() -> None:
    data: dict[str, object] = {
        "id": 1,
        "__internal": 1,
        "token": "t",
        "apiKey": "k",
        "sessionId": "s",
        "meta": {"visible": "y", "__secret": 1, "authToken": "x"},
        "blob": b"abc",
    }
    data["self"] = data
    assert strip_internal(data) == {
        "id": 1,
        "apiKey": "k",
        "meta": {"visible": "y"},
        "blob": "[bytes: 3]",
        "self": None,
    }


@pytest.mark.parametrize(
    "topic", ["chat", "chat:room1", "items:42", "a", "__signal:x", "a" * 256, "sp ace"]
)
def test_valid_topics(topic: str) -> None:
    assert is_valid_bus_topic(topic)


@pytest.mark.parametrize(
    "topic", ["", None, 42, {}, "a" * 257, "foo\0bar", "a\nb", 'foo"bar', "foo\\bar"]
)
def test_invalid_topics(topic: object) -> None:
    assert not is_valid_bus_topic(topic)


def test_envelope_policy_and_raw_size() -> None:
    v = EnvelopeValidator(max_bytes=4, allowed_system_topics=("__realtime",))
    assert v.accept("chat", "msg")
    assert not v.accept("chat", "")
    assert not v.accept("chat", 5)
    assert not v.accept("__signal:victim", "e")
    assert v.accept("__realtime", "e")
    assert EnvelopeValidator(allow_system_topics=True).accept("__signal:victim", "e")
    assert v.accept_raw("éé")
    assert not v.accept_raw("ééé")
    assert not v.accept_raw(None)
    with pytest.raises(ValueError, match="max_envelope_bytes"):
        EnvelopeValidator(max_bytes=0)


async def test_task_group_survives_failures_and_cancels_on_close() -> None:
    group = _runtime.current().task_group("test")
    started = asyncio.Event()

    async def fails() -> None:
        raise RuntimeError("background bug")

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    group.spawn(fails())
    task = group.spawn(forever())
    await started.wait()
    assert len(group) == 1
    await group.aclose()
    assert task.cancelled()
    with pytest.raises(RuntimeError, match="closed"):
        group.spawn(forever())
