"""Cross-instance side of :class:`~uwsx.features.cursor.Cursor`: the ``cursor:events`` channel.

Outbound envelopes are ``{instanceId, topic, event, payload, v}`` with ``event`` one of
``update``, ``bulk`` or ``remove`` and ``v`` the write's version. Inbound envelopes are checked
(size, JSON object, string ``instanceId``, valid non-``__`` topic, known event, payload shape,
``v`` a non-negative integer when present) before their frame is published on
``__cursor:<topic>`` with ``relay=False``; own envelopes are dropped, and so are frames no newer
than what was already shown of their entry (:class:`~uwsx.features.cursor_order.RemoteVersions`).

The subscription is opened lazily by the first update (not while the breaker is broken; a
failed attempt is retried by the next update). Once it is (re)established, local clients of
every active topic are backfilled with the live entries of other instances, since messages
published before or during the gap were missed; a backfilled entry older than what live relays
already showed (the read was answered late) is left out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from uwsx._runtime import buggify
from uwsx.features._envelope import EnvelopeValidator
from uwsx.features._json import dumps, loads
from uwsx.features.cursor_order import RemoteVersions
from uwsx.features.cursor_state import decode_versioned, version_of
from uwsx.ports.pubsub import LossWindow, PubSub, Subscription

if TYPE_CHECKING:
    from uwsx.features.cursor import Cursor

__all__ = ["CHANNEL", "CursorRelay"]

log = logging.getLogger("uwsx.cursor")

CHANNEL = "cursor:events"
_EVENTS = frozenset({"update", "bulk", "remove"})


def _frame_ok(frame: object) -> bool:
    return isinstance(frame, dict) and isinstance(frame.get("key"), str) and "data" in frame


def _version_ok(envelope: dict[str, Any]) -> bool:
    return "v" not in envelope or version_of(envelope["v"]) is not None


def _payload_ok(event: str, payload: object) -> bool:
    if event == "update":
        return _frame_ok(payload)
    if event == "bulk":
        return isinstance(payload, list) and all(_frame_ok(f) for f in payload)
    return isinstance(payload, dict) and isinstance(payload.get("key"), str)


class CursorRelay:
    """Publishes and receives one cursor object's envelopes."""

    def __init__(
        self, cursor: Cursor, pubsub: PubSub, max_bytes: int, versions: RemoteVersions
    ) -> None:
        self._cursor = cursor
        self._pubsub = pubsub
        self._validator = EnvelopeValidator(max_bytes=max_bytes)
        self.versions = versions
        self._subscription: Subscription | None = None
        self._subscribing: asyncio.Task[None] | None = None
        self._closed = False
        self.rejected = 0

    @property
    def subscribed(self) -> bool:
        return self._subscription is not None

    def ensure_subscribed(self) -> None:
        breaker = self._cursor._breaker
        if self._subscription is not None or self._subscribing is not None or self._closed:
            return
        if breaker is not None and breaker.state == "broken":
            return
        self._subscribing = self._cursor._tasks.spawn(self._subscribe(), name="uwsx-cursor-sub")

    async def settled(self) -> None:
        """Wait for a subscription attempt in progress, and its backfill, to finish."""
        task = self._subscribing
        if task is not None:
            await asyncio.wait([task])

    async def _subscribe(self) -> None:
        try:
            await self._open()
        finally:
            self._subscribing = None

    async def _open(self) -> None:
        breaker = self._cursor._breaker
        try:
            subscription = await self._pubsub.subscribe(
                [CHANNEL], self.on_message, on_loss=self._on_loss
            )
        except Exception as exc:
            if breaker is not None:
                breaker.failure(exc)
            log.warning("cursor: relay subscription failed (retried on next update): %s", exc)
            return
        if self._closed:
            await subscription.close()
            return
        if breaker is not None:
            breaker.success()
        self._subscription = subscription
        await self.backfill()

    def _on_loss(self, window: LossWindow) -> None:
        log.warning("cursor: relay was down; backfilling active topics")
        try:
            self._cursor._tasks.spawn(self.backfill(), name="uwsx-cursor-backfill")
        except RuntimeError:
            return  # closing

    async def backfill(self) -> None:
        """Publish other instances' live entries of every active topic locally (``bulk``)."""
        own = self._cursor.instance_id + ":"
        for topic in self._cursor.active_topics():
            if buggify("cursor.backfill_late"):
                # The backfill read goes out late: live relays arrive before (and during) it.
                await self._cursor._clock.sleep(0.01)
            try:
                items = await self._cursor._kv.map_items(self._cursor.key(topic))
            except Exception as exc:
                log.debug("cursor: backfill of %r failed: %s", topic, exc)
                continue
            entries = [
                frame
                for frame, v in decode_versioned(items, exclude_prefix=own)
                if self.versions.read(topic, frame["key"], v, shown=True)
            ]
            platform = self._cursor.platform
            if entries and platform is not None:
                platform.publish("__cursor:" + topic, "bulk", entries, relay=False)

    # -- outbound --------------------------------------------------------------------
    def _envelope(self, topic: str, event: str, payload: Any, version: int) -> str:
        return dumps(
            {
                "instanceId": self._cursor.instance_id,
                "topic": topic,
                "event": event,
                "payload": payload,
                "v": version,
            }
        )

    async def publish_many(self, frames: list[tuple[str, str, Any, int]]) -> None:
        """Relay ``(topic, event, payload, version)`` frames in order, in one round trip;
        failures are logged."""
        if not frames:
            return
        try:
            await self._pubsub.publish_many([(CHANNEL, self._envelope(*f)) for f in frames])
        except Exception as exc:
            log.warning("cursor: relay of %d frame(s) failed: %s", len(frames), exc)

    # -- inbound ---------------------------------------------------------------------
    def on_message(self, channel: str, raw: str) -> None:
        envelope = self._parse(raw)
        if envelope is None:
            self.rejected += 1
            return
        if envelope["instanceId"] == self._cursor.instance_id:
            return
        platform = self._cursor.platform
        if platform is None:
            return
        topic, event, payload = envelope["topic"], envelope["event"], envelope["payload"]
        version = version_of(envelope.get("v"))
        if event == "remove":
            self.versions.removed(topic, payload["key"], version)
        elif event == "update":
            if not self.versions.live(topic, payload["key"], version):
                return
        else:
            payload = [f for f in payload if self.versions.live(topic, f["key"], version)]
            if not payload:
                return
        try:
            platform.publish("__cursor:" + topic, event, payload, relay=False)
        except Exception:
            log.exception("cursor: local delivery failed")

    def _parse(self, raw: str) -> dict[str, Any] | None:
        if not self._validator.accept_raw(raw):
            return None
        try:
            envelope = loads(raw)
        except ValueError:
            return None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("instanceId"), str):
            return None
        topic, event = envelope.get("topic"), envelope.get("event")
        # ``__`` topics are never accepted: the frame goes to ``__cursor:<topic>`` anyway.
        if not self._validator.accept(topic, event) or event not in _EVENTS:
            return None
        assert isinstance(event, str)
        if not _payload_ok(event, envelope.get("payload")) or not _version_ok(envelope):
            return None
        return envelope

    async def close(self) -> None:
        self._closed = True
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                await subscription.close()
            except Exception as exc:
                log.debug("cursor: relay unsubscribe failed: %s", exc)
