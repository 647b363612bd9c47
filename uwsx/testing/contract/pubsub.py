"""The PubSub port contract: delivery, ordering, subscription changes, handler resilience,
namespaces, sharded channels, key-expiry events and message size.

Absence of a message cannot be awaited, so those tests publish a *barrier* after it: messages of
one publisher arrive in publish order, so once the barrier is in, an unwanted message that was
going to arrive would have arrived.
"""

from __future__ import annotations

import pytest

from uwsx.errors import UnsupportedBackendError
from uwsx.ports.backend import Backend, Capability
from uwsx.ports.pubsub import PubSub
from uwsx.testing.contract._base import (
    BackendOpener,
    Inbox,
    bad_input,
    pubsub_of,
)
from uwsx.testing.contract._expiry import PubSubExpiryContract

__all__ = ["PubSubContract"]


async def _barrier(pubsub: PubSub, inbox: Inbox, channel: str, *, sharded: bool = False) -> None:
    await pubsub.publish(channel, "barrier", sharded=sharded)
    await inbox.wait_for("barrier")


class PubSubContract(PubSubExpiryContract):
    """Every operation of :class:`uwsx.ports.PubSub` (see its module docstring)."""

    async def test_pubsub_delivers_to_own_subscription(self, backend: Backend) -> None:
        ps, inbox = pubsub_of(backend), self.inbox()
        sub = await ps.subscribe(["news"], inbox)
        assert sub.channels == frozenset({"news"})
        await ps.publish("news", '{"hello": "wörld"}')
        await inbox.wait_for('{"hello": "wörld"}')
        assert inbox.items == [("news", '{"hello": "wörld"}')], "channel names come unprefixed"

    async def test_pubsub_delivers_across_clients(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        inboxes = [self.inbox() for _ in range(3)]
        subscribers = [pubsub_of(await open_backend()) for _ in inboxes]
        for sub, inbox in zip(subscribers, inboxes, strict=True):
            await sub.subscribe(["room"], inbox)
        await pubsub_of(backend).publish("room", "hi")
        for inbox in inboxes:
            await inbox.wait_for("hi")
            assert inbox.items == [("room", "hi")]

    async def test_pubsub_keeps_publish_order(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        inbox = self.inbox()
        await pubsub_of(await open_backend()).subscribe(["a", "b"], inbox)
        ps = pubsub_of(backend)
        sent = []
        for i in range(60):
            channel = "a" if i % 3 else "b"
            await ps.publish(channel, f"m{i}")
            sent.append((channel, f"m{i}"))
        batch = [("b" if i % 2 else "a", f"batch{i}") for i in range(40)]
        await ps.publish_many(batch)
        sent.extend(batch)
        await inbox.wait_until(lambda: len(inbox.items) >= len(sent), "every message")
        assert inbox.items == sent

    async def test_pubsub_publish_many_of_nothing(self, backend: Backend) -> None:
        ps, inbox = pubsub_of(backend), self.inbox()
        await ps.subscribe(["c"], inbox)
        await ps.publish_many([])
        await _barrier(ps, inbox, "c")
        assert inbox.messages == ["barrier"]

    async def test_pubsub_channel_names_are_literal(self, backend: Backend) -> None:
        ps, inbox = pubsub_of(backend), self.inbox()
        await ps.subscribe(["news.*", "x?"], inbox)
        await ps.publish("news.sport", "pattern")
        await ps.publish("xy", "pattern")
        await ps.publish("x?", "literal")
        await _barrier(ps, inbox, "news.*")
        assert inbox.items == [("x?", "literal"), ("news.*", "barrier")]

    async def test_pubsub_add_and_remove_channels(self, backend: Backend) -> None:
        ps, inbox = pubsub_of(backend), self.inbox()
        sub = await ps.subscribe([], inbox)
        assert sub.channels == frozenset()
        await sub.add(["a", "b"])
        await sub.add(["a"])
        assert sub.channels == frozenset({"a", "b"})
        await ps.publish("a", "once")
        await sub.remove(["b", "never-added"])
        assert sub.channels == frozenset({"a"})
        await ps.publish("b", "after-remove")
        await _barrier(ps, inbox, "a")
        assert inbox.items == [("a", "once"), ("a", "barrier")]

    async def test_pubsub_close_stops_delivery(self, backend: Backend) -> None:
        ps, closed, kept = pubsub_of(backend), self.inbox(), self.inbox()
        sub = await ps.subscribe(["c"], closed)
        await ps.subscribe(["c"], kept)
        await ps.publish("c", "before")
        await closed.wait_for("before")
        await sub.close()
        await sub.close()
        assert sub.channels == frozenset()
        await _barrier(ps, kept, "c")
        assert closed.messages == ["before"]

    async def test_pubsub_every_subscription_receives(self, backend: Backend) -> None:
        ps, one, two = pubsub_of(backend), self.inbox(), self.inbox()
        await ps.subscribe(["c"], one)
        await ps.subscribe(["c", "d"], two)
        await ps.publish("c", "both")
        await ps.publish("d", "second")
        await two.wait_for("second")
        await one.wait_for("both")
        assert one.items == [("c", "both")]
        assert two.items == [("c", "both"), ("d", "second")]

    async def test_pubsub_handler_exception_does_not_stop_delivery(self, backend: Backend) -> None:
        ps, inbox = pubsub_of(backend), self.inbox()
        inbox.fail_on = {"boom-1", "boom-2"}
        sub = await ps.subscribe(["c"], inbox)
        for message in ("boom-1", "ok-1", "boom-2", "ok-2"):
            await ps.publish("c", message)
        await inbox.wait_for("ok-2")
        assert inbox.messages == ["boom-1", "ok-1", "boom-2", "ok-2"]
        assert sub.healthy

    async def test_pubsub_subscription_is_healthy_while_connected(self, backend: Backend) -> None:
        sub = await pubsub_of(backend).subscribe(["c"], self.inbox())
        assert sub.healthy

    async def test_pubsub_key_prefix_isolates_channels(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        base = backend.key_prefix
        one = pubsub_of(await open_backend(key_prefix=base + "one:"))
        two = pubsub_of(await open_backend(key_prefix=base + "two:"))
        in_one, in_two = self.inbox(), self.inbox()
        await one.subscribe(["c"], in_one)
        await two.subscribe(["c"], in_two)
        await one.publish("c", "for-one")
        await two.publish("c", "for-two")
        await _barrier(one, in_one, "c")
        await _barrier(two, in_two, "c")
        assert in_one.messages == ["for-one", "barrier"]
        assert in_two.messages == ["for-two", "barrier"]

    async def test_pubsub_sharded_channels_are_separate(self, backend: Backend) -> None:
        ps = pubsub_of(backend)
        if Capability.SHARDED_PUBSUB not in backend.capabilities:
            with pytest.raises(UnsupportedBackendError):
                await ps.publish("c", "m", sharded=True)
            with pytest.raises(UnsupportedBackendError):
                await ps.publish_many([("c", "m")], sharded=True)
            with pytest.raises(UnsupportedBackendError):
                await ps.subscribe(["c"], self.inbox(), sharded=True)
            return
        sharded, plain = self.inbox(), self.inbox()
        await ps.subscribe(["c"], sharded, sharded=True)
        await ps.subscribe(["c"], plain)
        await ps.publish("c", "s1", sharded=True)
        await ps.publish_many([("c", "s2"), ("c", "s3")], sharded=True)
        await ps.publish("c", "p1")
        await _barrier(ps, sharded, "c", sharded=True)
        await _barrier(ps, plain, "c")
        assert sharded.items == [("c", m) for m in ("s1", "s2", "s3", "barrier")]
        assert plain.items == [("c", "p1"), ("c", "barrier")]

    async def test_pubsub_message_size_limit(self, backend: Backend) -> None:
        ps, inbox = pubsub_of(backend), self.inbox()
        await ps.subscribe(["c"], inbox)
        limit = ps.max_message_bytes
        if limit is None:
            big = "x" * 100_000 + "é"
            await ps.publish("c", big)
            await inbox.wait_for(big)
            return
        assert limit > 0
        largest = "x" * limit
        await ps.publish("c", largest)
        await inbox.wait_for(largest)
        with pytest.raises(ValueError):
            await ps.publish("c", largest + "x")
        with pytest.raises(ValueError):
            # Fewer characters than the limit, more UTF-8 bytes.
            await ps.publish("c", "é" * (limit // 2 + 1))
        with pytest.raises(ValueError):
            await ps.publish_many([("c", "fine"), ("c", largest + "x")])

    async def test_pubsub_rejects_bad_input(self, backend: Backend) -> None:
        ps = pubsub_of(backend)
        with bad_input("channel", ValueError):
            await ps.publish("", "m")
        with bad_input("channel", TypeError):
            await ps.publish(1, "m")  # type: ignore[arg-type]
        with bad_input("message", TypeError):
            await ps.publish("c", 1)  # type: ignore[arg-type]
        with bad_input("message", TypeError):
            await ps.publish_many([("c", "ok"), ("c", b"bytes")])  # type: ignore[list-item]
        with bad_input("channel", ValueError):
            await ps.subscribe(["ok", ""], self.inbox())
        with bad_input("handler", TypeError):
            await ps.subscribe(["c"], "not callable")  # type: ignore[arg-type]
        sub = await ps.subscribe([], self.inbox())
        with bad_input("channel", ValueError):
            await sub.add([""])
