"""The sharded bus (:class:`uwsx.features.sharded_bus.ShardedBus`) on every instance.

Topics ``t0..tK`` map to shard channels through ``shard_key`` (``shards`` channels, or one per
topic). Each incarnation activates a bus on a :class:`~uwsx.platform.LocalPlatform` with one
local connection subscribed to every topic, a follower that follows and unfollows topics at
random (churn stops in the liveness phase), and a publisher. The backend apply log shows every
envelope on the wire and the server-side subscriptions are the ground truth for SB-1.

Invariants (``uwsx.features.sharded_bus`` docstring):

* SB-1 at the end, the channels subscribed at the backend are exactly the channels of the
  followed topics, and no refcount is below one;
* SB-2 a failed ``follow`` restores every refcount it changed;
* SB-3 every envelope on the wire carries only topics of its channel, and no instance delivers
  a message twice (its own echoes included);
* SB-4 after heal, a message fanned out for a topic reaches every instance that followed the
  topic throughout the liveness phase;
* SB-5 a topic the instance does not follow is never published locally.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, ClassVar

from uwsx.features.sharded_bus import ShardedBus
from uwsx.platform import Frame, LocalPlatform, Message
from uwsx_sim.clock import Rng
from uwsx_sim.mutants import Mutant, register
from uwsx_sim.scenario import parse_range
from uwsx_sim.workloads.base import Verdict, Workload

if TYPE_CHECKING:
    from uwsx_sim.model.client import SimConnection
    from uwsx_sim.node import SimNode
    from uwsx_sim.world import World

__all__ = ["ShardedBusWorkload"]

PREFIX = "sim:sb:"


class ShardedBusWorkload(Workload):
    feature = "sharded_bus"
    invariants: ClassVar[dict[str, str]] = {
        "SB-1": "backend channels = channels of followed topics; refcounts >= 1",
        "SB-2": "a failed follow restores every refcount it changed",
        "SB-3": "envelopes carry only their channel's topics; no duplicate delivery",
        "SB-4": "after heal, followers of a topic receive every fanned-out message",
        "SB-5": "a topic the instance does not follow is never published locally",
    }

    def __init__(self, world: World, spec: dict[str, Any], rng: Rng) -> None:
        super().__init__(world, spec, rng)
        self.topics = [f"t{i}" for i in range(self.int_knob("topics", 6))]
        self.shards = self.int_knob("shards", 0)  # 0: one channel per topic
        self.think = parse_range(self.spec.get("think", "100ms..500ms"))
        self.churn = parse_range(self.spec.get("churn", "300ms..2s"))
        self.settle = self.duration("settle", "6s")
        #: probability that a churn step unfollows a followed topic (0: follows only)
        self.unfollow = float(self.spec.get("unfollow", 0.5))
        self.violations: dict[str, tuple[float, str]] = {}
        self.counts: dict[str, int] = dict.fromkeys(self.invariants, 0)
        #: receiver -> msg ids delivered
        self.delivered: dict[str, set[str]] = {}
        #: msg id -> (backend time, topic)
        self.fanned_out: dict[str, tuple[float, str]] = {}
        #: receiver -> topics followed without interruption since the liveness phase began
        self.steady: dict[str, set[str]] = {}
        self.buses: dict[str, tuple[ShardedBus, SimConnection]] = {}
        self.final_ok: dict[str, str] = {}

    def shard_key(self, topic: str) -> str:
        return topic if self.shards <= 0 else f"s{int(topic[1:]) % self.shards}"

    def _violate(self, invariant: str, detail: str) -> None:
        self.violations.setdefault(invariant, (self.now(), detail))

    async def run_instance(self, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        who = f"{node.name}#{node.incarnation}"
        platform = LocalPlatform()
        bus = ShardedBus(conn, channel_prefix=PREFIX, shard_key=self.shard_key)
        local = platform.connect()
        for topic in self.topics:
            local.subscribe(topic)
        local.on_frame = lambda frame: self._frame(who, bus, frame)
        rt = node.rt()
        while True:
            try:
                await bus.activate(platform)
                if bus.active:
                    break
            except Exception:
                pass
            await rt.clock.sleep(0.5)
        self.buses[who] = (bus, conn)
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            loop.create_task(self._follower(node, who, bus)),
            loop.create_task(self._publisher(node, who, bus.wrap(platform))),
        )

    def _frame(self, who: str, bus: ShardedBus, frame: Frame) -> None:
        data = frame.data if isinstance(frame.data, dict) else {}
        msg_id = str(data.get("id"))
        seen = self.delivered.setdefault(who, set())
        self.counts["SB-3"] += 1
        if msg_id in seen:
            self._violate("SB-3", f"{who} received {msg_id} twice")
        seen.add(msg_id)
        publisher = msg_id.split("/", 1)[0]
        self.counts["SB-5"] += 1
        if publisher != who and bus.followed().get(frame.topic, 0) <= 0:
            self._violate("SB-5", f"{who} published {msg_id} of unfollowed {frame.topic}")

    async def _follower(self, node: SimNode, who: str, bus: ShardedBus) -> None:
        rt = node.rt()
        mine: dict[str, int] = {}
        while self.phase in ("chaos", "heal"):
            await rt.clock.sleep(rt.random.uniform(*self.churn))
            if self.phase not in ("chaos", "heal"):
                break
            topic = self.topics[int(rt.random.random() * len(self.topics))]
            if mine.get(topic, 0) > 0 and rt.random.random() < self.unfollow:
                mine[topic] -= 1
                await bus.unfollow(topic)
                continue
            before = bus.followed()
            try:
                await bus.follow(topic)
            except Exception:
                self.counts["SB-2"] += 1
                if bus.followed() != before:
                    self._violate(
                        "SB-2",
                        f"{who}: failed follow({topic}) left refcounts "
                        f"{bus.followed()} (before {before})",
                    )
                continue
            mine[topic] = mine.get(topic, 0) + 1
        self.steady[who] = {t for t, n in mine.items() if n > 0}
        await asyncio.Event().wait()

    async def _publisher(self, node: SimNode, who: str, platform: Any) -> None:
        rt = node.rt()
        n = 0
        while self.phase != "final":
            await rt.clock.sleep(rt.random.uniform(*self.think))
            burst = []
            for _ in range(1 + int(rt.random.random() * 3)):
                n += 1
                topic = self.topics[int(rt.random.random() * len(self.topics))]
                burst.append(Message(topic, "m", {"id": f"{who}/{n}"}))
            if rt.random.random() < 0.5:
                platform.publish_batched(burst)  # one envelope per shard channel
            else:
                for m in burst:
                    platform.publish(m.topic, m.event, m.data)

    def observe(
        self, conn: SimConnection, label: str, record: Any, value: Any, at: float, serial: int
    ) -> None:
        if label not in ("pubsub.publish", "pubsub.publish_many"):
            return
        _, _, _, args, _ = record
        pairs = [(args[0], args[1])] if label == "pubsub.publish" else list(args[0])
        for channel, raw in pairs:
            if not channel.startswith(PREFIX):
                continue
            try:
                env = json.loads(raw)
            except ValueError:
                continue
            for entry in env.get("batch") or [env]:
                topic = str(entry.get("topic"))
                data = entry.get("data") if isinstance(entry.get("data"), dict) else {}
                if PREFIX + self.shard_key(topic) != channel:
                    self._violate("SB-3", f"{topic} sent on {channel}")
                if "id" in data:
                    self.fanned_out.setdefault(str(data["id"]), (at, topic))

    async def final(self) -> None:
        for who, (bus, _conn) in self.buses.items():
            node = self.world.nodes[int(who.split("#")[0][1:])]
            if f"{node.name}#{node.incarnation}" != who or not node.up:
                continue
            # the adapter's view of the subscription: what the port says is subscribed
            sub = getattr(bus, "_subscription", None)
            at_backend = set(getattr(sub, "channels", ()))
            followed = bus.followed()
            wanted = {bus.channel_for(t) for t, n in followed.items() if n > 0}
            self.counts["SB-1"] += 1
            if any(n < 1 for n in followed.values()):
                self._violate("SB-1", f"{who}: refcounts {followed}")
            if at_backend != wanted:
                self._violate(
                    "SB-1",
                    f"{who}: backend has {sorted(at_backend)}, followed "
                    f"topics need {sorted(wanted)}",
                )
            self.final_ok[who] = "checked"

    def check(self) -> list[Verdict]:
        self._sb4()
        out = []
        for inv, text in self.invariants.items():
            v = Verdict(
                inv,
                text,
                inv not in self.violations,
                checked=self.counts[inv],
                kind="liveness" if inv in ("SB-1", "SB-4") else "safety",
            )
            if inv in self.violations:
                v.time, v.detail = self.violations[inv]
            out.append(v)
        return out

    def _sb4(self) -> None:
        sc = self.world.scenario
        live_start = sc.duration + sc.heal
        end = live_start + sc.liveness
        for msg_id, (at, topic) in self.fanned_out.items():
            if not live_start + self.settle <= at <= end - 1.0:
                continue
            publisher = msg_id.split("/", 1)[0]
            for who, topics in self.steady.items():
                if who == publisher or who not in self.final_ok or topic not in topics:
                    continue
                self.counts["SB-4"] += 1
                if msg_id not in self.delivered.get(who, set()):
                    self.violations.setdefault(
                        "SB-4", (at, f"{msg_id} on {topic} at {at:.3f}s never reached {who}")
                    )


def _one_channel(original: Any) -> Any:
    def _grouped(self: Any, messages: Any) -> list[tuple[str, str, list[str]]]:
        groups: list[tuple[str, str, list[str]]] = original(self, messages)
        if len(groups) < 2:
            return groups
        # the bug: a batch spanning shards goes out on the first shard's channel only
        first = groups[0][0]
        return [(first, env, topics) for _, env, topics in groups]

    return _grouped


def _follow_keeps_ref(original: Any) -> Any:
    async def follow(self: Any, topic: str) -> None:
        self._check_active("follow")
        channel = self._refs.bump(topic)
        await self._reconcile([channel], strict=True)  # the bug: no unbump on failure

    return follow


register(
    Mutant(
        "sharded-batch-one-channel",
        "a batch spanning shards is sent on the first shard's channel",
        "sharded-bus-crash",
        "SB-3",
        "uwsx.features.sharded_bus:ShardedBus._grouped",
        _one_channel,
    )
)
register(
    Mutant(
        "sharded-follow-keeps-ref",
        "a failed follow keeps its refcount (the original's bug)",
        "sharded-bus-crash",
        "SB-2",
        "uwsx.features.sharded_bus:ShardedBus.follow",
        _follow_keeps_ref,
    )
)
