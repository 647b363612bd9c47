"""Reference counts of :class:`~uwsx.features.sharded_bus.ShardedBus`: followed topics, and
per channel the number of distinct followed topics mapped to it.

A channel must be subscribed exactly while its count is positive. Every bump has an exact
inverse (:meth:`FollowRefs.unbump`), which is what lets a failed follow restore the previous
state completely (the original left failed bumps behind, so the channel was never subscribed
again). The channel a topic was counted on is remembered, so an undo never depends on calling
``shard_key`` again.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["FollowRefs"]


class FollowRefs:
    """Topic and channel reference counts."""

    def __init__(self, channel_for: Callable[[str], str]) -> None:
        self._channel_for = channel_for
        self.topics: dict[str, int] = {}
        self._topic_channel: dict[str, str] = {}
        self.channels: dict[str, int] = {}

    def bump(self, topic: str) -> str:
        """Add one reference to ``topic``; returns its channel."""
        channel = self._topic_channel.get(topic)
        if channel is None:
            channel = self._channel_for(topic)
        count = self.topics.get(topic, 0)
        self.topics[topic] = count + 1
        if count == 0:
            self._topic_channel[topic] = channel
            self.channels[channel] = self.channels.get(channel, 0) + 1
        return channel

    def unbump(self, topic: str) -> str | None:
        """Drop one reference; returns the channel when the topic's last reference went."""
        count = self.topics.get(topic, 0)
        if count <= 0:
            return None
        if count > 1:
            self.topics[topic] = count - 1
            return None
        del self.topics[topic]
        channel = self._topic_channel.pop(topic)
        refs = self.channels.get(channel, 0) - 1
        if refs > 0:
            self.channels[channel] = refs
        else:
            self.channels.pop(channel, None)
        return channel

    def clear(self) -> None:
        self.topics.clear()
        self._topic_channel.clear()
        self.channels.clear()
