"""Shared cursors (:class:`uwsx.features.cursor.Cursor`) on every instance.

Each incarnation runs ``clients_per_instance`` clients: a client moves its cursor ``moves``
times (data ``{"n": i}``, some moves faster than ``throttle`` so trailing edges fire), then
removes it and a new client takes its place. One observer connection per instance records the
``__cursor:<topic>`` frames it receives. The backend apply log is the ground truth for writes
and relays.

Invariants (``uwsx.features.cursor`` docstring):

* CU-1 no ghost: once ``remove`` returned, no write of that entry is applied and no update of
  it is relayed;
* CU-2 ordering: an observer on another instance sees one cursor's updates in order (``n`` never
  goes back) and never an update after that cursor's ``remove`` frame;
* CU-3 expiry: at the end, no entry of an instance that crashed more than ``ttl`` ago is stored.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, ClassVar

from uwsx.features.cursor import Cursor
from uwsx.memory.kv import MemoryKV
from uwsx.platform import Frame, LocalPlatform
from uwsx_sim.clock import Rng
from uwsx_sim.model.replication import run_now
from uwsx_sim.mutants import Mutant, register
from uwsx_sim.scenario import parse_range
from uwsx_sim.workloads.base import Verdict, Workload

if TYPE_CHECKING:
    from uwsx_sim.model.client import SimConnection
    from uwsx_sim.node import SimNode
    from uwsx_sim.world import World

__all__ = ["CursorWorkload"]

TOPIC = "doc"


class CursorWorkload(Workload):
    feature = "cursor"
    invariants: ClassVar[dict[str, str]] = {
        "CU-1": "no ghost: after remove returned, no write or relay of the entry",
        "CU-2": "a cursor's updates arrive in order and never after its remove",
        "CU-3": "entries of instances crashed longer than ttl ago are gone",
    }

    def __init__(self, world: World, spec: dict[str, Any], rng: Rng) -> None:
        super().__init__(world, spec, rng)
        self.clients = self.int_knob("clients_per_instance", 2)
        self.moves = self.int_knob("moves", 8)
        self.throttle = self.duration("throttle", "50ms")
        self.ttl = self.duration("ttl", "3s")
        self.step = parse_range(self.spec.get("step", "10ms..200ms"))
        self.violations: dict[str, tuple[float, str]] = {}
        self.counts: dict[str, int] = dict.fromkeys(self.invariants, 0)
        #: entry key -> backend time its remove returned (CU-1 starts then)
        self.removed: dict[str, float] = {}
        #: observer -> key -> last n seen, and keys whose remove frame it saw
        self.last_n: dict[str, dict[str, int]] = {}
        self.gone: dict[str, set[str]] = {}
        self.key_owner: dict[str, tuple[int, int]] = {}
        self.final_keys: list[str] = []

    def _violate(self, invariant: str, detail: str, at: float | None = None) -> None:
        self.violations.setdefault(invariant, (self.now() if at is None else at, detail))

    async def run_instance(self, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        who = f"{node.name}#{node.incarnation}"
        platform = LocalPlatform()
        cursor = Cursor(conn, throttle=self.throttle, ttl=self.ttl)
        self.key_owner[cursor.instance_id] = (node.index, node.incarnation)
        observer = platform.connect(id=f"observer-{who}")
        observer.subscribe("__cursor:" + TOPIC)
        observer.on_frame = lambda frame: self._frame(who, cursor.instance_id, frame)
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(
                loop.create_task(self._client(node, cursor, platform, i))
                for i in range(self.clients)
            )
        )

    async def _client(self, node: SimNode, cursor: Cursor, platform: LocalPlatform, i: int) -> None:
        rt = node.rt()
        k = 0
        while self.phase != "final":
            k += 1
            conn = platform.connect(id=f"{node.name}#{node.incarnation}/{i}/{k}")
            for n in range(self.moves):
                await rt.clock.sleep(rt.random.uniform(*self.step))
                cursor.update(conn, TOPIC, {"n": n}, platform)
            key = next((e.key for e in _entries_of(cursor, conn)), None)
            await cursor.remove(conn, platform)
            if key is not None:
                self.removed.setdefault(key, self.world.model.clock.monotonic())
            platform.disconnect(conn)

    def _frame(self, observer: str, own_id: str, frame: Frame) -> None:
        entries: list[Any]
        if frame.event == "update":
            entries = [frame.data]
        elif frame.event == "bulk" and isinstance(frame.data, list):
            entries = frame.data
        elif frame.event == "remove" and isinstance(frame.data, dict):
            self.gone.setdefault(observer, set()).add(str(frame.data.get("key")))
            return
        else:
            return
        seen = self.last_n.setdefault(observer, {})
        for e in entries:
            if not isinstance(e, dict):
                continue
            key = str(e.get("key"))
            if key.rsplit(":", 1)[0] == own_id:
                continue  # local frames are not relayed ones
            n = (e.get("data") or {}).get("n")
            if not isinstance(n, int):
                continue
            self.counts["CU-2"] += 1
            if key in self.gone.get(observer, set()):
                self._violate("CU-2", f"{observer} got an update of {key} after its remove")
            if n < seen.get(key, -1):
                self._violate("CU-2", f"{observer} got {key} n={n} after n={seen[key]}")
            seen[key] = max(seen.get(key, -1), n)

    def observe(
        self, conn: SimConnection, label: str, record: Any, value: Any, at: float, serial: int
    ) -> None:
        if label == "kv.map_put_many":
            _, _, _, args, _ = record
            if args and args[0] == "cursor:" + TOPIC:
                for key in args[1]:
                    self.counts["CU-1"] += 1
                    gone = self.removed.get(key)
                    if gone is not None and at > gone:
                        self._violate(
                            "CU-1",
                            f"{key} written at {at:.3f}s after its remove returned at {gone:.3f}s",
                            at,
                        )
        elif label in ("pubsub.publish", "pubsub.publish_many"):
            _, _, _, args, _ = record
            pairs = [(args[0], args[1])] if label == "pubsub.publish" else list(args[0])
            for _channel, raw in pairs:
                try:
                    env = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(env, dict) or env.get("event") not in ("update", "bulk"):
                    continue
                payload = env.get("payload")
                items = payload if isinstance(payload, list) else [payload]
                for item in items:
                    key = str((item or {}).get("key")) if isinstance(item, dict) else ""
                    gone = self.removed.get(key)
                    if gone is not None and at > gone:
                        self._violate("CU-1", f"{key} relayed at {at:.3f}s after its remove", at)

    async def final(self) -> None:
        prefix = str(self.world.scenario.backend.get("key_prefix", "app:"))
        kv = MemoryKV(self.world.model.primary, prefix)
        stored = run_now(kv.map_items("cursor:" + TOPIC))
        now = self.now()
        for key in stored:
            owner = self.key_owner.get(key.rsplit(":", 1)[0])
            if owner is None:
                continue
            self.counts["CU-3"] += 1
            node = self.world.nodes[owner[0]]
            crashed = [
                t for t in node.crashed_at if sum(1 for s in node.started_at if s <= t) == owner[1]
            ]
            if crashed and now - crashed[0] > self.ttl + 1.0:
                self._violate(
                    "CU-3",
                    f"{key} of n{owner[0]}#{owner[1]} (crashed at "
                    f"{crashed[0]:.3f}s) is still stored",
                )

    def check(self) -> list[Verdict]:
        out = []
        for inv, text in self.invariants.items():
            v = Verdict(
                inv,
                text,
                inv not in self.violations,
                checked=self.counts[inv],
                kind="liveness" if inv == "CU-3" else "safety",
            )
            if inv in self.violations:
                v.time, v.detail = self.violations[inv]
            out.append(v)
        return out


def _entries_of(cursor: Cursor, conn: Any) -> list[Any]:
    state = cursor._conns.get(conn)
    return [] if state is None else list(state.topics.values())


def _settled_at_once(original: Any) -> Any:
    async def settled(self: Any) -> None:
        return None  # the bug: remove does not wait for the writes already in flight

    return settled


def _put_many_without_ttl(original: Any) -> Any:
    async def map_put_many(self: Any, key: str, items: Any, *, ttl: float | None = None) -> None:
        await original(self, key, items, ttl=None)

    return map_put_many


register(
    Mutant(
        "cursor-remove-does-not-wait",
        "remove deletes without waiting for in-flight writes",
        "cursor-crash",
        "CU-1",
        "uwsx.features.cursor_state:CursorEntry.settled",
        _settled_at_once,
    )
)
register(
    Mutant(
        "cursor-store-without-ttl",
        "cursor entries are stored without a deadline",
        "cursor-crash",
        "CU-3",
        "uwsx.memory.kv:MemoryKV.map_put_many",
        _put_many_without_ttl,
    )
)
