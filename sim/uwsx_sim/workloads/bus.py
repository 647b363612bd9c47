"""The pub/sub bus (:class:`uwsx.features.bus.PubSubBus`) on every instance.

Each incarnation builds a :class:`~uwsx.platform.LocalPlatform`, a ``PubSubBus`` activated on it
and one local connection subscribed to every topic; publishers publish through
``bus.wrap(platform)`` messages carrying a unique id and a per-publisher counter. Every frame a
local connection receives is recorded as a ``deliver`` observation. The backend's ground truth
(which envelopes the backend actually fanned out, and when) comes from the apply log.

Invariants (``uwsx.features.bus`` docstring):

* BUS-1 no phantom: every delivered message was published, on that topic;
* BUS-2 no duplicate: an instance receives a message at most once (echo suppression);
* BUS-3 order: one publisher's messages on one topic reach an instance in publish order;
* BUS-4 after heal, a message the backend fanned out reaches every instance that was up and
  subscribed (instances up since before the liveness phase, message fanned out after the
  subscriptions settled).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from uwsx.errors import Indeterminate, Unavailable
from uwsx.features.bus import PubSubBus
from uwsx.platform import Frame, LocalPlatform
from uwsx_sim.clock import Rng
from uwsx_sim.mutants import Mutant, register
from uwsx_sim.scenario import parse_range
from uwsx_sim.workloads.base import Verdict, Workload

if TYPE_CHECKING:
    from uwsx_sim.model.client import SimConnection
    from uwsx_sim.node import SimNode
    from uwsx_sim.world import World

__all__ = ["BusWorkload"]


@dataclass(frozen=True, slots=True)
class Delivery:
    time: float
    receiver: str  # node#incarnation
    topic: str
    id: str
    publisher: str
    n: int


class BusWorkload(Workload):
    feature = "bus"
    invariants: ClassVar[dict[str, str]] = {
        "BUS-1": "no phantom: every delivered message was published on that topic",
        "BUS-2": "no duplicate: an instance receives a message at most once",
        "BUS-3": "one publisher's messages on one topic arrive in publish order",
        "BUS-4": "after heal, fanned-out messages reach every up and subscribed instance",
    }

    def __init__(self, world: World, spec: dict[str, Any], rng: Rng) -> None:
        super().__init__(world, spec, rng)
        self.topics = [f"t{i}" for i in range(self.int_knob("topics", 2))]
        self.publishers = self.int_knob("publishers_per_instance", 1)
        self.think = self.spec.get("think", "20ms..200ms")
        self.settle = self.duration("settle", "6s")
        self.burst = self.int_knob("burst", 3)
        self.published: dict[str, str] = {}  # id -> topic
        self.deliveries: list[Delivery] = []
        #: message id -> backend time it was fanned out (ground truth)
        self.fanned_out: dict[str, float] = {}
        #: instances up since before the liveness phase, at the end of the run
        self.receivers: list[str] = []

    async def run_instance(self, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        who = f"{node.name}#{node.incarnation}"
        platform = LocalPlatform()
        bus = PubSubBus(conn, channel="sim:bus", system_channel=None)
        local = platform.connect()
        for topic in self.topics:
            local.subscribe(topic)
        local.on_frame = lambda frame: self._delivered(who, frame)
        rt = node.rt()
        while True:
            try:
                await bus.activate(platform)
                break
            except (Indeterminate, Unavailable):
                await rt.clock.sleep(0.5)
        wrapped = bus.wrap(platform)
        tasks = [
            asyncio.get_running_loop().create_task(self._publisher(node, wrapped, p))
            for p in range(self.publishers)
        ]
        await asyncio.gather(*tasks)

    async def _publisher(self, node: SimNode, platform: Any, p: int) -> None:
        rt = node.rt()
        proc = f"{node.name}#{node.incarnation}/{p}"
        lo, hi = parse_range(self.think)
        n = 0
        while self.phase != "final":
            await rt.clock.sleep(rt.random.uniform(lo, hi))
            if self.phase == "final":
                return
            # a burst is published within one tick: the bus relays it as one batch
            for _ in range(1 + int(rt.random.random() * self.burst)):
                n += 1
                topic = self.topics[int(rt.random.random() * len(self.topics))]
                msg_id = f"{proc}/{n}"
                self.published[msg_id] = topic
                inv = self.history.invoke(
                    node.name,
                    node.incarnation,
                    proc,
                    "publish",
                    {"id": msg_id, "topic": topic},
                    self.now(),
                )
                platform.publish(topic, "m", {"id": msg_id, "pub": proc, "n": n})
                self.history.complete(inv, "ok", None, self.now())

    def _delivered(self, who: str, frame: Frame) -> None:
        data = frame.data if isinstance(frame.data, dict) else {}
        msg_id = str(data.get("id"))
        node, _, inc = who.partition("#")
        self.history.note(
            node, int(inc), "sub", "deliver", {"id": msg_id, "topic": frame.topic}, self.now()
        )
        self.deliveries.append(
            Delivery(
                self.now(), who, frame.topic, msg_id, str(data.get("pub")), int(data.get("n", 0))
            )
        )

    def observe(
        self, conn: SimConnection, label: str, record: Any, value: Any, at: float, serial: int
    ) -> None:
        if label not in ("pubsub.publish", "pubsub.publish_many"):
            return
        _, _, _, args, _ = record
        raws = [args[1]] if label == "pubsub.publish" else [m for _, m in args[0]]
        for raw in raws:
            try:
                env = json.loads(raw)
            except ValueError:
                continue
            entries = env.get("batch") or [env]
            for entry in entries:
                data = entry.get("data")
                if isinstance(data, dict) and "id" in data:
                    self.fanned_out.setdefault(str(data["id"]), at)

    async def final(self) -> None:
        sc = self.world.scenario
        live_start = sc.duration + sc.heal
        self.receivers = [
            f"{n.name}#{n.incarnation}"
            for n in self.world.nodes
            if n.up and n.started_at and n.started_at[-1] < live_start
        ]

    # -- checking --------------------------------------------------------------------
    def check(self) -> list[Verdict]:
        v1 = Verdict("BUS-1", self.invariants["BUS-1"], True)
        v2 = Verdict("BUS-2", self.invariants["BUS-2"], True)
        v3 = Verdict("BUS-3", self.invariants["BUS-3"], True)
        seen: set[tuple[str, str]] = set()
        last: dict[tuple[str, str, str], int] = {}
        for d in self.deliveries:
            v1.checked += 1
            v2.checked += 1
            v3.checked += 1
            if self.published.get(d.id) != d.topic and v1.ok:
                v1.ok, v1.time = False, d.time
                v1.detail = f"{d.receiver} got {d.id!r} on {d.topic}, never published there"
            key = (d.receiver, d.id)
            if key in seen and v2.ok:
                v2.ok, v2.time = False, d.time
                v2.detail = f"{d.receiver} received {d.id} twice"
            seen.add(key)
            okey = (d.receiver, d.publisher, d.topic)
            prev = last.get(okey, 0)
            if d.n < prev and v3.ok:
                v3.ok, v3.time = False, d.time
                v3.detail = f"{d.receiver} got {d.publisher} #{d.n} after #{prev} on {d.topic}"
            last[okey] = max(prev, d.n)
        return [v1, v2, v3, self._bus4(seen)]

    def _bus4(self, seen: set[tuple[str, str]]) -> Verdict:
        v = Verdict("BUS-4", self.invariants["BUS-4"], True, kind="liveness")
        sc = self.world.scenario
        live_start = sc.duration + sc.heal
        end = live_start + sc.liveness
        window = (live_start + self.settle, end - 1.0)
        receivers = self.receivers
        for msg_id, at in self.fanned_out.items():
            if not window[0] <= at <= window[1]:
                continue
            publisher = msg_id.split("/", 1)[0]
            for who in receivers:
                if who == publisher:
                    continue
                v.checked += 1
                if (who, msg_id) not in seen and v.ok:
                    v.ok, v.time = False, at
                    v.detail = f"{msg_id} fanned out at {at:.3f}s never reached {who}"
        return v


def _echo_not_suppressed(original: Any) -> Any:
    def _on_message(self: Any, channel: str, raw: str) -> None:
        mine = self.instance_id
        self.instance_id = ""  # the bug: own envelopes are not recognised
        try:
            original(self, channel, raw)
        finally:
            self.instance_id = mine

    return _on_message


def _reverse_many(original: Any) -> Any:
    async def publish_many(self: Any, messages: Any, *, sharded: bool = False) -> None:
        await original(self, list(reversed(messages)), sharded=sharded)

    return publish_many


register(
    Mutant(
        "bus-no-echo-suppression",
        "the bus re-delivers its own envelopes locally",
        "bus-partition",
        "BUS-2",
        "uwsx.features.bus:PubSubBus._on_message",
        _echo_not_suppressed,
    )
)
register(
    Mutant(
        "pubsub-batch-reversed",
        "publish_many fans a batch out in reverse order",
        "bus-partition",
        "BUS-3",
        "uwsx.memory.pubsub:MemoryPubSub.publish_many",
        _reverse_many,
    )
)
