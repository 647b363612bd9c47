"""``ReplayBuffer``: per-topic sequence numbers and bounded history for resuming clients.

Guarantee: every message stored by :meth:`ReplayBuffer.publish` gets the next seq of its topic
(1, 2, 3, ... contiguous across all instances, because the append is one atomic port operation)
and a client resuming from ``since_seq`` receives exactly the stored messages after it, in order,
preceded by a ``truncated`` frame when some of them are no longer stored. A client is never told
"nothing missed" when messages were lost: the seq counter never restarts on its own (the original
library expired it with the data, so clients holding a high seq silently skipped new messages).

Invariants (checked by the simulator's replay checker, ``uwsx_sim`` RP-1..RP-4):

* RP-1 seqs of one topic strictly increase and are contiguous within an epoch.
* RP-2 a resume from ``s`` yields ``s+1..head`` or an explicit ``truncated`` frame; never a silent
  gap, duplicate or reorder.
* RP-3 every acknowledged publish is in the log unless loss was signalled (epoch change).
* RP-4 after faults heal, resuming consumers catch up to the head.

Wire frames go to one connection on topic ``__replay:{topic}``: ``truncated`` (``None``), then
``msg`` (``{seq, event, data}``) per message, then ``end`` (``{reqId, epoch}``); or ``denied``
(``{code, reqId}``) alone when ``platform.check_subscribe`` refuses the topic. Clients keep the
``epoch`` with their last seq and send both when resuming: positions are only comparable within
one epoch, and the epoch changes when the backend lost acknowledged writes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from uwsx import _runtime
from uwsx.connect import require
from uwsx.errors import ReplaySerializationError, ReplayStorageError, ReplicationTimeoutError
from uwsx.features._json import dumps, loads
from uwsx.metrics import NULL_METRICS, MetricsLike
from uwsx.platform import Connection, Platform, resolve
from uwsx.ports.backend import Backend, Capability
from uwsx.ports.sorted_log import Appended, LogEntry, SortedLog
from uwsx.ports.stream import Stream
from uwsx.reliability.breaker import CircuitBreaker, with_breaker

__all__ = ["Gap", "IdempotentPublish", "ReplayBuffer"]

LOG_PREFIX = "replay:"


@dataclass(frozen=True, slots=True)
class Gap:
    """``truncated``: messages after ``last_seen`` are missing from storage, starting at
    ``missing_from``."""

    truncated: bool
    missing_from: int | None


@dataclass(frozen=True, slots=True)
class IdempotentPublish:
    seq: int
    is_duplicate: bool


def _non_negative_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _seconds(value: object, what: str, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"replay: {what} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"replay: {what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


class ReplayBuffer:
    """Sequenced, bounded history per topic (see the module docstring).

    :param backend: needs ``log`` (``storage="sortedset"``) or ``stream`` (``"stream"``).
    :param size: messages kept per topic (positive integer).
    :param ttl: seconds the messages of an idle topic are kept (0: forever). The seq counter is
        kept regardless.
    :param durability: ``"replicated"`` waits for ``min_replicas`` replicas (capability
        ``replica_wait``) up to ``replication_timeout`` seconds after each store.
    :param idempotency_ttl: seconds a producer's request ids are remembered (stream storage).
    :param local_fanout_on_storage_failure: when storing fails, still publish locally (the
        message then has no seq and cannot be replayed) instead of raising.
    :param table: storage namespace (a table on Postgres).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        storage: Literal["sortedset", "stream"] = "sortedset",
        size: int = 1000,
        ttl: float = 0.0,
        durability: Literal["replicated"] | None = None,
        min_replicas: int = 1,
        replication_timeout: float = 1.0,
        idempotency_ttl: float = 172800.0,
        local_fanout_on_storage_failure: bool = False,
        table: str | None = None,
        breaker: CircuitBreaker | None = None,
        metrics: MetricsLike | None = None,
    ) -> None:
        if storage not in ("sortedset", "stream"):
            raise ValueError(f"replay: storage must be 'sortedset' or 'stream', got {storage!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"replay: size must be a positive integer, got {size!r}")
        if durability not in (None, "replicated"):
            raise ValueError(f"replay: durability must be 'replicated' or None, got {durability!r}")
        if durability == "replicated" and (
            isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 1
        ):
            raise ValueError(
                f"replay: min_replicas must be a positive integer, got {min_replicas!r}"
            )
        if not isinstance(local_fanout_on_storage_failure, bool):
            raise TypeError("replay: local_fanout_on_storage_failure must be a bool")
        port_name = "log" if storage == "sortedset" else "stream"
        caps = (Capability.REPLICA_WAIT,) if durability == "replicated" else ()
        require(backend, "ReplayBuffer", ports=(port_name,), capabilities=caps)
        port: SortedLog | None = backend.log if storage == "sortedset" else backend.stream
        assert port is not None
        self._log: SortedLog = port.space(table) if table is not None else port
        self.storage = storage
        self.size = size
        ttl_s = _seconds(ttl, "ttl", allow_zero=True)
        self._ttl = ttl_s or None
        self._replicas = (
            (min_replicas, _seconds(replication_timeout, "replication_timeout", allow_zero=True))
            if durability == "replicated"
            else None
        )
        idem = _seconds(idempotency_ttl, "idempotency_ttl", allow_zero=True)
        self._idempotency_ttl = idem or None
        self._fallback = local_fanout_on_storage_failure
        self._breaker = breaker
        m = metrics or NULL_METRICS
        self._map_topic = m.map_topic
        self._m_publishes = m.counter("replay_publishes_total", "Messages stored", ("topic",))
        self._m_replayed = m.counter(
            "replay_messages_replayed_total", "Messages sent by replay()", ("topic",)
        )
        self._m_truncations = m.counter(
            "replay_truncations_total", "Replays that reported truncation", ("topic",)
        )
        if self._replicas is not None:
            self._m_replications = m.counter(
                "replay_replications_total", "Stores acknowledged by enough replicas"
            )
            self._m_repl_timeouts = m.counter(
                "replay_replication_timeouts_total", "Stores not acknowledged by enough replicas"
            )
        if self._fallback:
            self._m_fallbacks = m.counter(
                "replay_storage_fallbacks_total",
                "Local-only publishes after a storage failure",
                ("topic",),
            )
        if storage == "stream":
            self._m_idem_hits = m.counter(
                "replay_idmp_hits_total", "Idempotent publishes found duplicate", ("topic",)
            )
            self._m_idem_writes = m.counter(
                "replay_idmp_writes_total", "Idempotent publishes stored", ("topic",)
            )

    @staticmethod
    def _name(topic: str) -> str:
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"replay: topic must be a non-empty string, got {topic!r}")
        return LOG_PREFIX + topic

    @staticmethod
    def _serialize(op: str, data: Any) -> str:
        try:
            return dumps(data)
        except (TypeError, ValueError) as exc:
            raise ReplaySerializationError(op, exc) from exc

    def _check_replicas(self, stored: Appended) -> None:
        if self._replicas is None:
            return
        min_replicas, timeout = self._replicas
        acked = stored.replicas or 0
        if acked < min_replicas:
            self._m_repl_timeouts.inc()
            raise ReplicationTimeoutError(acked, min_replicas, timeout)
        self._m_replications.inc()

    # -- writing -------------------------------------------------------------------
    async def publish(
        self, platform: Platform, topic: str, event: str, data: Any = None
    ) -> int | None:
        """Store the message, then publish it locally; returns its seq.

        :raises ReplaySerializationError: ``data`` is not JSON-serialisable (nothing stored).
        :raises ReplayStorageError: storing failed (unless the local fallback is on, in which
            case the message is published locally and ``None`` is returned).
        :raises ReplicationTimeoutError: stored, but too few replicas acknowledged in time; the
            local publish is skipped.
        """
        name = self._name(topic)
        payload = self._serialize("publish", data)
        try:
            stored = await with_breaker(
                self._breaker,
                lambda: self._log.append(
                    name, event, payload, max_size=self.size, ttl=self._ttl, replicas=self._replicas
                ),
            )
        except Exception as exc:
            if self._fallback:
                self._m_fallbacks.inc(topic=self._map_topic(topic))
                platform.publish(topic, event, data)
                return None
            raise ReplayStorageError("publish", exc) from exc
        self._m_publishes.inc(topic=self._map_topic(topic))
        self._check_replicas(stored)
        platform.publish(topic, event, data)
        return stored.seq

    async def publish_idempotent(
        self,
        platform: Platform,
        topic: str,
        event: str,
        data: Any = None,
        *,
        producer_id: str,
        request_id: str,
        idempotency_ttl: float | None = None,
    ) -> IdempotentPublish:
        """Store once per ``(producer_id, request_id)``: a retry returns the original seq with
        ``is_duplicate=True`` and publishes nothing. Needs ``storage="stream"``."""
        if self.storage != "stream":
            raise TypeError("replay: publish_idempotent needs storage='stream'")
        for what, value in (("producer_id", producer_id), ("request_id", request_id)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"replay: {what} must be a non-empty string")
        dedup_ttl = self._idempotency_ttl
        if idempotency_ttl is not None:
            dedup_ttl = _seconds(idempotency_ttl, "idempotency_ttl", allow_zero=True) or None
        name = self._name(topic)
        payload = self._serialize("publish_idempotent", data)
        stream = self._log
        assert isinstance(stream, Stream)
        try:
            stored = await with_breaker(
                self._breaker,
                lambda: stream.append_idempotent(
                    name,
                    event,
                    payload,
                    producer_id=producer_id,
                    request_id=request_id,
                    max_size=self.size,
                    ttl=self._ttl,
                    dedup_ttl=dedup_ttl,
                    replicas=self._replicas,
                ),
            )
        except Exception as exc:
            raise ReplayStorageError("publish_idempotent", exc) from exc
        label = self._map_topic(topic)
        if stored.duplicate:
            self._m_idem_hits.inc(topic=label)
            return IdempotentPublish(stored.seq, True)
        self._m_idem_writes.inc(topic=label)
        self._m_publishes.inc(topic=label)
        self._check_replicas(stored)
        platform.publish(topic, event, data)
        return IdempotentPublish(stored.seq, False)

    # -- reading -------------------------------------------------------------------
    async def seq(self, topic: str) -> int:
        """The topic's latest seq (0 if never published)."""
        name = self._name(topic)
        bounds = await with_breaker(self._breaker, lambda: self._log.bounds(name))
        return bounds.newest

    async def gap(self, topic: str, last_seen: int, *, epoch: str | None = None) -> Gap:
        """Whether a client at ``last_seen`` can catch up from storage. With ``epoch`` (the
        one the client last saw, from an ``end`` frame) a different current epoch means its
        position is meaningless now: everything from seq 1 is missing to it."""
        if not _non_negative_int(last_seen):
            raise ValueError(f"replay: last_seen must be a non-negative integer, got {last_seen!r}")
        if last_seen == 0:
            return Gap(False, None)
        name = self._name(topic)
        b = await with_breaker(self._breaker, lambda: self._log.bounds(name))
        if epoch is not None and epoch != b.epoch:
            return Gap(True, 1)
        if b.newest <= last_seen:
            return Gap(False, None)
        if b.oldest is None or b.oldest > last_seen + 1:
            return Gap(True, last_seen + 1)
        return Gap(False, None)

    @staticmethod
    def _decode(entries: list[LogEntry]) -> list[tuple[int, str, Any]]:
        out = []
        for e in entries:
            try:
                out.append((e.seq, e.event, loads(e.data)))
            except ValueError:
                continue
        return out

    async def since(self, topic: str, seq: int) -> list[dict[str, Any]]:
        """Stored messages after ``seq`` as ``{seq, topic, event, data}`` (``[]`` for a bad
        ``seq``)."""
        if not _non_negative_int(seq):
            return []
        name = self._name(topic)
        entries = await with_breaker(self._breaker, lambda: self._log.read_after(name, seq))
        return [
            {"seq": s, "topic": topic, "event": ev, "data": d} for s, ev, d in self._decode(entries)
        ]

    async def replay(
        self,
        conn: Connection,
        topic: str,
        since_seq: int,
        platform: Platform,
        req_id: str | None = None,
        *,
        epoch: str | None = None,
    ) -> None:
        """Send what ``conn`` missed since ``since_seq`` as ``__replay:{topic}`` frames.

        ``epoch`` is the epoch the client saw with ``since_seq`` (every ``end`` frame carries
        the current one). When the backend lost acknowledged writes since (failover, restart
        without persistence) the epoch differs: the client gets ``truncated`` and every stored
        message from the start, so a reused seq can never be skipped silently.
        """
        channel = "__replay:" + topic
        denial = await resolve(platform.check_subscribe(conn, topic))
        if denial:
            platform.send(conn, channel, "denied", {"code": denial, "reqId": req_id})
            return
        if not _non_negative_int(since_seq):
            platform.send(conn, channel, "end", {"reqId": req_id})
            return
        name = self._name(topic)

        async def read(after: int) -> tuple[Any, list[LogEntry]]:
            if _runtime.buggify("replay.read_split"):
                # Over a connection pool the two reads are separate requests, answered in
                # either order with other clients' writes (or a failover) in between.
                entries = await self._log.read_after(name, after)
                await _runtime.current().clock.sleep(0)
                return await self._log.bounds(name), entries
            return await asyncio.gather(self._log.bounds(name), self._log.read_after(name, after))

        bounds, entries = await with_breaker(self._breaker, lambda: read(since_seq))
        stale_epoch = since_seq > 0 and epoch is not None and epoch != bounds.epoch
        if stale_epoch:
            if _runtime.buggify("replay.reread_late"):
                # The re-read after an epoch change goes out late (a loop busy for 10 ms).
                await _runtime.current().clock.sleep(0.01)
            bounds, entries = await with_breaker(self._breaker, lambda: read(0))
        if since_seq > 0 and (
            stale_epoch
            or (entries and entries[0].seq > since_seq + 1)
            or (not entries and bounds.newest > since_seq)
        ):
            self._m_truncations.inc(topic=self._map_topic(topic))
            platform.send(conn, channel, "truncated", None)
        messages = self._decode(entries)
        for s, ev, d in messages:
            platform.send(conn, channel, "msg", {"seq": s, "event": ev, "data": d})
        if messages:
            self._m_replayed.inc(len(messages), topic=self._map_topic(topic))
        platform.send(conn, channel, "end", {"reqId": req_id, "epoch": bounds.epoch})

    def resume_hook(self) -> Callable[..., Awaitable[None]]:
        """``async hook(conn, *, last_seen_seqs, platform)``: replay every topic in order.
        A position is a seq, or ``{"seq": n, "epoch": e}`` with the epoch of the last ``end``
        frame (invalid seqs count as 0)."""

        async def resume(
            conn: Connection,
            *,
            last_seen_seqs: Mapping[str, Any] | None = None,
            platform: Platform | None = None,
        ) -> None:
            if not last_seen_seqs or platform is None:
                return
            for topic, position in last_seen_seqs.items():
                epoch = None
                seq = position
                if isinstance(position, Mapping):
                    seq = position.get("seq")
                    raw_epoch = position.get("epoch")
                    epoch = raw_epoch if isinstance(raw_epoch, str) else None
                seq = seq if _non_negative_int(seq) else 0
                await self.replay(conn, topic, seq, platform, epoch=epoch)

        return resume

    # -- maintenance -----------------------------------------------------------------
    async def clear(self) -> None:
        """Delete every topic's messages and counter."""
        await with_breaker(self._breaker, lambda: self._log.delete_prefix(LOG_PREFIX))

    async def clear_topic(self, topic: str) -> None:
        name = self._name(topic)
        await with_breaker(self._breaker, lambda: self._log.delete(name))

    async def close(self) -> None:
        """Nothing to release (kept for symmetry with other features)."""

    async def __aenter__(self) -> ReplayBuffer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
