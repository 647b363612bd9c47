"""The replay buffer (:class:`uwsx.features.replay.ReplayBuffer`) on every instance.

Publishers store messages with unique ids through ``ReplayBuffer.publish``. Consumers are
clients whose position survives instance crashes (it lives in the browser): each one repeatedly
resumes every topic with ``ReplayBuffer.replay(conn, topic, since, platform)`` from the instance
it is attached to and records what the frames told it (``truncated``, then ``msg`` frames).

Invariants (``uwsx.features.replay`` docstring):

* RP-1 per topic and backend epoch, assigned seqs strictly increase and are contiguous
  (backend ground truth: every applied append);
* RP-2 a resume from ``s`` yields ``s+1, s+2, ...`` in order, or a ``truncated`` frame first;
  and no acknowledged message with a seq at or below a consumer's position is silently missed
  (a seq reused for another message after the backend lost writes is such a miss);
* RP-3 every acknowledged publish is still stored at the end (unless trimmed by ``size``), or
  the backend epoch changed since it was acknowledged (loss was signalled at the port);
* RP-4 after heal every consumer on a live instance catches up to the head.

Knobs: ``topics``, ``publishers_per_instance``, ``size``, ``think``, ``poll``, and for durable
acknowledgements ``durability = "replicated"`` with ``min_replicas`` and
``replication_timeout``: a publish then counts as acknowledged only once ``WAIT`` reported
enough replicas; a :class:`~uwsx.errors.ReplicationTimeoutError` is an indeterminate publish
(stored on the primary, maybe lost by a failover).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from uwsx.errors import (
    Indeterminate,
    ReplayStorageError,
    ReplicationTimeoutError,
    Unavailable,
)
from uwsx.features.replay import ReplayBuffer
from uwsx.memory.logs import MemorySortedLog
from uwsx.platform import LocalPlatform
from uwsx.ports.sorted_log import Appended, LogEntry
from uwsx_sim.clock import Rng
from uwsx_sim.history import OpType
from uwsx_sim.model.client import LAST_APPLY
from uwsx_sim.scenario import parse_duration, parse_range
from uwsx_sim.workloads.base import Verdict, Workload

if TYPE_CHECKING:
    from uwsx_sim.model.client import SimConnection
    from uwsx_sim.node import SimNode
    from uwsx_sim.world import World

__all__ = ["ReplayWorkload"]


@dataclass(slots=True)
class Consumer:
    """A client's replay position per topic, surviving instance restarts."""

    name: str
    pos: dict[str, int] = field(default_factory=dict)
    #: topic -> the epoch of the last ``end`` frame (positions only compare within one epoch)
    epoch: dict[str, str] = field(default_factory=dict)
    #: topic -> backend epochs the consumer was told it left (their losses were signalled)
    abandoned: dict[str, set[str]] = field(default_factory=dict)
    #: topic -> ids received
    received: dict[str, set[str]] = field(default_factory=dict)
    #: topic -> (from, to) seq windows declared missing by a truncated frame
    truncated: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Acked:
    time: float
    topic: str
    seq: int
    id: str
    epoch: str


class ReplayWorkload(Workload):
    feature = "replay"
    expected_probes: ClassVar[tuple[str, ...]] = ("truncated frame",)
    invariants: ClassVar[dict[str, str]] = {
        "RP-1": "per topic and epoch, assigned seqs strictly increase and are contiguous",
        "RP-2": "a resume yields since+1.. in order or a truncated frame; no acknowledged "
        "message at or below a consumer's position is silently missed",
        "RP-3": "acknowledged publishes stay stored unless trimmed or the epoch changed",
        "RP-4": "after heal every live consumer catches up to the head",
    }

    def __init__(self, world: World, spec: dict[str, Any], rng: Rng) -> None:
        super().__init__(world, spec, rng)
        self.topics = [f"r{i}" for i in range(self.int_knob("topics", 2))]
        self.publishers = self.int_knob("publishers_per_instance", 1)
        self.size = self.int_knob("size", 50)
        self.think = parse_range(self.spec.get("think", "50ms..300ms"))
        self.poll = parse_range(self.spec.get("poll", "200ms..1s"))
        durability = self.spec.get("durability")
        if durability not in (None, "replicated"):
            raise ValueError(
                f"replay workload: durability must be 'replicated', not {durability!r}"
            )
        self.durable: dict[str, Any] = (
            {
                "durability": "replicated",
                "min_replicas": self.int_knob("min_replicas", 1),
                "replication_timeout": parse_duration(self.spec.get("replication_timeout", "1s")),
            }
            if durability
            else {}
        )
        self.consumers = {n: Consumer(f"c{n}") for n in range(world.scenario.instances)}
        self.acked: list[Acked] = []
        self.violations: dict[str, tuple[float, str]] = {}
        #: (generation, log) -> last seq applied (ground truth for RP-1)
        self.applied: list[tuple[float, int, str, int]] = []
        self.final_state: dict[str, tuple[int | None, int, str, dict[int, str]]] = {}
        self.caught_up: dict[str, bool] = {}
        #: apply serial of each append -> epoch of the store that applied it
        self.epochs: dict[int, str] = {}

    # -- driving -------------------------------------------------------------------
    async def run_instance(self, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        platform = LocalPlatform()
        replay = ReplayBuffer(conn, size=self.size, **self.durable)
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._publisher(node, replay, platform, p))
            for p in range(self.publishers)
        ]
        tasks.append(loop.create_task(self._consumer(node, replay, platform)))
        await asyncio.gather(*tasks)

    async def _publisher(
        self, node: SimNode, replay: ReplayBuffer, platform: LocalPlatform, p: int
    ) -> None:
        rt = node.rt()
        proc = f"{node.name}#{node.incarnation}/{p}"
        n = 0
        while self.phase != "final":
            await rt.clock.sleep(rt.random.uniform(*self.think))
            if self.phase == "final":
                return
            n += 1
            topic = self.topics[int(rt.random.random() * len(self.topics))]
            msg_id = f"{proc}/{n}"
            inv = self.history.invoke(
                node.name,
                node.incarnation,
                proc,
                "publish",
                {"id": msg_id, "topic": topic},
                self.now(),
            )
            try:
                seq = await replay.publish(platform, topic, "m", {"id": msg_id})
            except ReplayStorageError as exc:
                kind: OpType = (
                    "fail"
                    if isinstance(exc.cause, Unavailable)
                    and not isinstance(exc.cause, Indeterminate)
                    else "info"
                )
                self.history.complete(inv, kind, repr(exc.cause), self.now())
                continue
            except ReplicationTimeoutError as exc:
                # stored on the primary, too few replicas in time: not acknowledged
                self.sometimes("replication timeout")
                self.history.complete(inv, "info", repr(exc), self.now())
                continue
            self.history.complete(inv, "ok", seq, self.now())
            if self.durable:
                self.sometimes("acknowledged by replicas")
            if seq is not None:
                # the epoch of the store that applied this very append (ground truth)
                epoch = self.epochs.get(LAST_APPLY.get()[1], "?")
                self.acked.append(Acked(self.now(), topic, seq, msg_id, epoch))

    async def _consumer(self, node: SimNode, replay: ReplayBuffer, platform: LocalPlatform) -> None:
        rt = node.rt()
        consumer = self.consumers[node.index]
        while True:
            await rt.clock.sleep(rt.random.uniform(*self.poll))
            for topic in self.topics:
                await self._resume(node, replay, platform, consumer, topic)

    async def _resume(
        self,
        node: SimNode,
        replay: ReplayBuffer,
        platform: LocalPlatform,
        consumer: Consumer,
        topic: str,
    ) -> None:
        since = consumer.pos.get(topic, 0)
        seen_epoch = consumer.epoch.get(topic)
        conn = platform.connect()
        try:
            await replay.replay(conn, topic, since, platform, epoch=seen_epoch)
        except ReplayStorageError:
            return
        except (Indeterminate, Unavailable):
            return
        finally:
            platform.disconnect(conn)
        frames = conn.frames_on("__replay:" + topic)
        ends = [f.data for f in frames if f.event == "end" and isinstance(f.data, dict)]
        new_epoch = ends[-1].get("epoch") if ends else None
        epoch_changed = (
            since > 0
            and seen_epoch is not None
            and new_epoch is not None
            and new_epoch != seen_epoch
        )
        if epoch_changed:
            assert seen_epoch is not None
            # The old position means nothing now; what that epoch held and was lost is signalled.
            consumer.abandoned.setdefault(topic, set()).add(_store_epoch(seen_epoch))
            consumer.truncated[topic] = []
            self.sometimes("epoch change signalled")
        if isinstance(new_epoch, str):
            consumer.epoch[topic] = new_epoch
        truncated = any(f.event == "truncated" for f in frames)
        msgs = [f.data for f in frames if f.event == "msg" and isinstance(f.data, dict)]
        seqs = [int(m["seq"]) for m in msgs]
        ids = [str((m.get("data") or {}).get("id")) for m in msgs]
        self.history.note(
            node.name,
            node.incarnation,
            consumer.name,
            "resume",
            {"topic": topic, "since": since, "truncated": truncated, "seqs": seqs},
            self.now(),
        )
        expected = since + 1
        if epoch_changed:
            # The position restarts in the new epoch: everything from seq 1 is due, unless a
            # truncated frame says what is gone.
            since, expected = 0, 1
        if since == 0 and seqs and not truncated and not epoch_changed:
            # position 0 is a fresh client: it starts at the oldest stored message (the
            # feature announces truncation only to clients that had a position)
            consumer.truncated.setdefault(topic, []).append((1, seqs[0] - 1))
            expected = seqs[0]
        if truncated:
            self.sometimes("truncated frame")
            first = seqs[0] if seqs else None
            end = (first - 1) if first is not None else None
            if end is None or end >= since + 1:
                consumer.truncated.setdefault(topic, []).append((since + 1, end or 10**12))
            if seqs:
                expected = seqs[0]
        for s in seqs:
            if s != expected:
                self._violate(
                    "RP-2",
                    f"{consumer.name} resumed {topic} from {since}: got seq "
                    f"{s}, expected {expected} (seqs {seqs[:8]})",
                )
                break
            expected = s + 1
        consumer.received.setdefault(topic, set()).update(ids)
        if epoch_changed:
            consumer.pos[topic] = seqs[-1] if seqs else 0
        elif seqs:
            consumer.pos[topic] = max(since, seqs[-1])

    def _violate(self, invariant: str, detail: str) -> None:
        self.violations.setdefault(invariant, (self.now(), detail))

    def observe(
        self, conn: SimConnection, label: str, record: Any, value: Any, at: float, serial: int
    ) -> None:
        if label != "log.append" or not isinstance(value, Appended):
            return
        model = self.world.model
        self.epochs[serial] = conn.inner.store.epoch
        if conn.inner.store is not model.primary:
            return
        self.applied.append((at, model.generation, str(record[3][0]), value.seq))

    async def final(self) -> None:
        # Consumers poll at most every poll[1] seconds: give them two rounds to catch up.
        await self.world.clock.sleep(2 * self.poll[1] + 2.0)
        store = self.world.model.primary
        log = MemorySortedLog(store, str(self.world.scenario.backend.get("key_prefix", "app:")))
        for topic in self.topics:
            bounds = await log.bounds("replay:" + topic)
            entries = await log.read_after("replay:" + topic, 0)
            stored = {e.seq: _entry_id(e) for e in entries}
            self.final_state[topic] = (bounds.oldest, bounds.newest, store.epoch, stored)
            for n, consumer in self.consumers.items():
                node = self.world.nodes[n]
                if node.up:
                    self.caught_up[f"{consumer.name}:{topic}"] = (
                        consumer.pos.get(topic, 0) >= bounds.newest
                    )

    # -- checking --------------------------------------------------------------------
    def check(self) -> list[Verdict]:
        return [self._rp1(), self._rp2(), self._rp3(), self._rp4()]

    def _rp1(self) -> Verdict:
        v = Verdict("RP-1", self.invariants["RP-1"], True)
        last: dict[tuple[int, str], int] = {}
        for at, gen, log, seq in self.applied:
            v.checked += 1
            prev = last.get((gen, log))
            if prev is not None and seq != prev + 1 and v.ok:
                v.ok, v.time = False, at
                v.detail = f"{log}: seq {seq} assigned after {prev}"
            last[(gen, log)] = seq
        return v

    def _rp2(self) -> Verdict:
        v = Verdict("RP-2", self.invariants["RP-2"], True)
        v.checked = sum(1 for op in self.history.ops if op.f == "resume")
        if "RP-2" in self.violations:
            v.ok = False
            v.time, v.detail = self.violations["RP-2"]
            return v
        for consumer in self.consumers.values():
            for a in self.acked:
                pos = consumer.pos.get(a.topic, 0)
                if a.seq > pos or a.id in consumer.received.get(a.topic, set()):
                    continue
                if a.epoch in consumer.abandoned.get(a.topic, set()):
                    continue  # lost with an epoch the consumer was told it left
                if any(lo <= a.seq <= hi for lo, hi in consumer.truncated.get(a.topic, [])):
                    continue
                v.ok, v.time = False, a.time
                v.detail = (
                    f"{consumer.name} is at {a.topic}:{pos} but never got {a.id} "
                    f"(acked as seq {a.seq}) and was never told it was truncated"
                )
                return v
        return v

    def _rp3(self) -> Verdict:
        v = Verdict("RP-3", self.invariants["RP-3"], True)
        lost = 0
        for a in self.acked:
            state = self.final_state.get(a.topic)
            if state is None:
                continue
            oldest, _newest, epoch, stored = state
            v.checked += 1
            if oldest is None or a.seq < oldest:
                continue  # trimmed by size
            if stored.get(a.seq) == a.id:
                continue
            if epoch != a.epoch:
                lost += 1  # lost, but the epoch changed: signalled
                continue
            if v.ok:
                v.ok, v.time = False, a.time
                v.detail = f"acked {a.id} as {a.topic}:{a.seq} is gone, epoch unchanged"
        if lost:
            v.extra["acked_lost_with_epoch_change"] = lost
        return v

    def _rp4(self) -> Verdict:
        v = Verdict("RP-4", self.invariants["RP-4"], True, kind="liveness")
        for key, ok in self.caught_up.items():
            v.checked += 1
            if not ok and v.ok:
                v.ok, v.detail = False, f"consumer {key} did not catch up to the head"
        return v


def _store_epoch(log_epoch: str) -> str:
    """The store epoch inside a memory log epoch (``<store epoch>.<log incarnation>``)."""
    return log_epoch.split(".", 1)[0]


def _entry_id(entry: LogEntry) -> str:
    import json

    try:
        data = json.loads(entry.data)
    except ValueError:
        return ""
    return str(data.get("id")) if isinstance(data, dict) else ""
