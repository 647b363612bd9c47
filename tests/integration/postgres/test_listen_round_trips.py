"""Subscribing to (and dropping) several channels at once is one round trip on the LISTEN
session, with either driver, and notifications keep arriving on every channel.

Round trips are counted by :class:`tests.integration.postgres.relay.Relay` from the protocol
messages the client sends (each simple ``Query`` and each ``Sync``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import uwsx
from tests.integration.pg_servers import PgServer
from tests.integration.postgres.relay import Relay, relay_to
from uwsx import _runtime
from uwsx_postgres import PostgresBackend

WAIT = 20.0
CHANNELS = [f"batch-{i}" for i in range(6)]  # not plain identifiers: hashed wire names
PLAIN = [f"batch_{i}" for i in range(6)]


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, channel: str, message: str) -> None:
        self.messages.append((channel, message))
        self._changed.set()

    async def wait_for(self, expected: tuple[str, str]) -> None:
        async with asyncio.timeout(WAIT):
            while expected not in self.messages:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def relayed(
    pg_server: PgServer, pg_driver: str
) -> AsyncIterator[tuple[Relay, PostgresBackend, PostgresBackend]]:
    """A subscriber whose connections go through a relay, and a direct publisher."""
    prefix = f"rt-{_runtime.current().ids.hex(4)}:"
    async with relay_to(pg_server.url_for(pg_driver)) as (relay, url):
        subscriber = await uwsx.connect(url, key_prefix=prefix, ping_interval=600.0)
        publisher = await uwsx.connect(pg_server.url_for(pg_driver), key_prefix=prefix)
        assert isinstance(subscriber, PostgresBackend)
        assert isinstance(publisher, PostgresBackend)
        try:
            yield relay, subscriber, publisher
        finally:
            await subscriber.close()
            await publisher.close()


@pytest.mark.parametrize("names", [CHANNELS, PLAIN], ids=["hashed", "plain"])
async def test_adding_and_removing_channels_is_one_round_trip_each(
    relayed: tuple[Relay, PostgresBackend, PostgresBackend], names: list[str]
) -> None:
    relay, subscriber, publisher = relayed
    inbox = Inbox()
    first, rest = names[0], names[1:]
    sub = await subscriber.pubsub.subscribe([first], inbox)

    before = relay.round_trips
    await sub.add(rest)
    assert relay.round_trips - before == 1, "LISTEN of several channels"
    for channel in names:
        await publisher.pubsub.publish(channel, f"to {channel}")
    for channel in names:
        await inbox.wait_for((channel, f"to {channel}"))

    before = relay.round_trips
    await sub.remove(rest)
    assert relay.round_trips - before == 1, "UNLISTEN of several channels"
    for channel in rest:
        await publisher.pubsub.publish(channel, "after remove")
    await publisher.pubsub.publish(first, "last")
    # Notifications arrive in commit order: "last" comes after any of the others would.
    await inbox.wait_for((first, "last"))
    assert [m for m in inbox.messages if m[1] == "after remove"] == []
    assert sub.channels == {first}


async def test_channels_shared_by_subscriptions_are_listened_once(
    relayed: tuple[Relay, PostgresBackend, PostgresBackend],
) -> None:
    """A second subscription to channels already listened costs no round trip, and removing
    it keeps the first subscription's delivery."""
    relay, subscriber, publisher = relayed
    one, two = Inbox(), Inbox()
    await subscriber.pubsub.subscribe(CHANNELS, one)
    before = relay.round_trips
    other = await subscriber.pubsub.subscribe(CHANNELS, two)
    assert relay.round_trips == before
    await other.close()
    assert relay.round_trips == before
    await publisher.pubsub.publish(CHANNELS[-1], "still here")
    await one.wait_for((CHANNELS[-1], "still here"))
    assert two.messages == []
