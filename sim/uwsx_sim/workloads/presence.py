"""Presence (:class:`uwsx.features.presence.Presence`) on every instance.

Each incarnation runs ``tabs_per_instance`` browser tabs that join a topic as one of ``users``
users, stay a while and leave, and one observer per topic that ``sync``s and folds the
``presence_state`` / ``presence_diff`` frames it receives into a view. The workload knows the
truth: when each tab held its user (from the join until its leave, or until ``ttl`` after its
instance crashed). Churn stops when the liveness phase starts, so views must converge.

Invariants (``uwsx.features.presence`` docstring, SIMULATOR.md presence row), with
``G = heartbeat + max clock skew + 2 s`` of propagation slack:

* PR-1 no phantom: whenever an observer is told a user is present, some tab held that user
  within the last ``G`` (a crashed tab's hold lasts until its entry's ``ttl`` expires);
* PR-2 no resurrection: after an observer is told a user left, it is told the user joined
  again only if some tab held the user after the leave (minus ``G``);
* PR-3 convergence: at the end every live observer's view equals the users held by tabs of
  live instances (which is also the stored membership);
* PR-4 no false leave: an observer is never told a user left while a tab on an instance
  untouched by faults held that user continuously around that moment ("exactly one instance
  announces the leave when the *last* holder goes").
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from uwsx.features.presence import Presence
from uwsx.platform import Frame, LocalPlatform
from uwsx.ports.kv import MapRemoval
from uwsx_sim.clock import Rng
from uwsx_sim.mutants import Mutant, register
from uwsx_sim.scenario import parse_range
from uwsx_sim.workloads.base import Verdict, Workload

if TYPE_CHECKING:
    from uwsx_sim.node import SimNode
    from uwsx_sim.world import World

__all__ = ["PresenceWorkload"]


@dataclass(slots=True)
class Hold:
    """One tab holding a user on a topic: ``start`` at the join, ``end`` when it certainly
    stopped counting (leave done, or crash + ttl); ``left_at`` when its leave was invoked."""

    node: int
    who: str
    topic: str
    user: str
    start: float
    joined_at: float | None = None
    left_at: float | None = None
    end: float | None = None


@dataclass(frozen=True, slots=True)
class Told:
    time: float
    observer: str
    topic: str
    user: str
    op: str  # "join" | "leave"


class PresenceWorkload(Workload):
    feature = "presence"
    invariants: ClassVar[dict[str, str]] = {
        "PR-1": "no phantom: a user shown present was held within the propagation bound",
        "PR-2": "no resurrection: a user re-appears after a leave only if held after it",
        "PR-3": "convergence: at the end every live view equals the live holders",
        "PR-4": "no false leave while a fault-free instance still holds the user",
    }

    def __init__(self, world: World, spec: dict[str, Any], rng: Rng) -> None:
        super().__init__(world, spec, rng)
        self.topics = [f"room{i}" for i in range(self.int_knob("topics", 1))]
        self.users = [f"u{i}" for i in range(self.int_knob("users", 5))]
        self.tabs = self.int_knob("tabs_per_instance", 2)
        self.heartbeat = self.duration("heartbeat", "1s")
        self.ttl = self.duration("ttl", "3s")
        self.hold = parse_range(self.spec.get("hold", "500ms..5s"))
        self.think = parse_range(self.spec.get("think", "200ms..2s"))
        skew = parse_range(world.scenario.clock.get("max_skew", "0s"))[1]
        steps = [
            abs(parse_range(n.get("value", "2s"))[i])
            for n in world.scenario.nemeses
            if n.get("kind") == "clock-step"
            for i in (0, 1)
        ]
        self.grace = self.heartbeat + skew + max(steps, default=0.0) + 2.0
        self.holds: list[Hold] = []
        self.told: list[Told] = []
        #: observer name -> topic -> users in its view
        self.views: dict[str, dict[str, set[str]]] = {}
        self.final_views: dict[str, dict[str, set[str]]] = {}
        self.final_truth: dict[str, set[str]] = {}

    # -- driving -------------------------------------------------------------------
    async def run_instance(self, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        platform = LocalPlatform()
        presence = Presence(conn, heartbeat=self.heartbeat, ttl=self.ttl)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._observe(node, presence, platform, t)) for t in self.topics]
        tasks += [
            loop.create_task(self._tab(node, presence, platform, i)) for i in range(self.tabs)
        ]
        await asyncio.gather(*tasks)

    async def _observe(
        self, node: SimNode, presence: Presence, platform: LocalPlatform, topic: str
    ) -> None:
        rt = node.rt()
        name = f"{node.name}#{node.incarnation}"
        view = self.views.setdefault(name, {}).setdefault(topic, set())
        obs = platform.connect(id=f"observer-{name}")
        obs.on_frame = lambda frame: self._frame(name, topic, view, frame)
        while True:
            try:
                await presence.sync(obs, topic, platform)
                return
            except Exception:
                await rt.clock.sleep(0.5)

    def _frame(self, name: str, topic: str, view: set[str], frame: Frame) -> None:
        if frame.topic != "__presence:" + topic or not isinstance(frame.data, dict):
            return
        now = self.now()
        node, _, inc = name.partition("#")
        if frame.event == "presence_state":
            new = set(frame.data)
            joins, leaves = new - view, view - new
        elif frame.event == "presence_diff":
            joins = set(frame.data.get("joins") or {})
            leaves = set(frame.data.get("leaves") or {})
        else:
            return
        for user in sorted(leaves):
            if user in view:
                view.discard(user)
                self.told.append(Told(now, name, topic, user, "leave"))
        for user in sorted(joins):
            if user not in view:
                view.add(user)
                self.told.append(Told(now, name, topic, user, "join"))
        self.history.note(
            node, int(inc), "observer", "view", {"topic": topic, "users": sorted(view)}, now
        )

    async def _tab(
        self, node: SimNode, presence: Presence, platform: LocalPlatform, i: int
    ) -> None:
        rt = node.rt()
        proc = f"{node.name}#{node.incarnation}/{i}"
        while self.phase in ("chaos", "heal"):
            await rt.clock.sleep(rt.random.uniform(*self.think))
            if self.phase not in ("chaos", "heal"):
                break
            user = self.users[int(rt.random.random() * len(self.users))]
            topic = self.topics[int(rt.random.random() * len(self.topics))]
            tab = platform.connect(id=user)
            hold = Hold(node.index, proc, topic, user, self.now())
            self.holds.append(hold)
            ok = await self._step(
                node,
                proc,
                "join",
                {"user": user, "topic": topic},
                presence.join(tab, topic, platform),
            )
            if ok:
                hold.joined_at = self.now()
            # a tab in the liveness phase stays: membership must stop changing
            stay = rt.random.uniform(*self.hold)
            while self.phase in ("chaos", "heal") and stay > 0:
                await rt.clock.sleep(min(stay, 0.5))
                stay -= 0.5
            if self.phase not in ("chaos", "heal"):
                if ok:
                    await asyncio.Event().wait()
                hold.end = self.now() + self.ttl + self.grace
                return
            hold.left_at = self.now()
            await self._step(
                node,
                proc,
                "leave",
                {"user": user, "topic": topic},
                presence.leave(tab, platform, topic),
            )
            platform.disconnect(tab)
            hold.end = self.now() + (0.0 if ok else self.ttl + self.grace)
        await asyncio.Event().wait()

    async def _step(self, node: SimNode, proc: str, f: str, value: Any, coro: Any) -> bool:
        inv = self.history.invoke(node.name, node.incarnation, proc, f, value, self.now())
        try:
            await coro
        except Exception as exc:
            self.history.complete(inv, "info", repr(exc), self.now())
            return False
        self.history.complete(inv, "ok", None, self.now())
        return True

    async def final(self) -> None:
        world = self.world
        now = self.now()
        for hold in self.holds:
            node = world.nodes[hold.node]
            crashed = [t for t in node.crashed_at if t >= hold.start]
            if crashed and (hold.end is None or crashed[0] < hold.end):
                hold.end = crashed[0] + self.ttl + self.grace
        live = {f"{n.name}#{n.incarnation}" for n in world.nodes if n.up}
        for topic in self.topics:
            self.final_truth[topic] = {
                h.user
                for h in self.holds
                if h.topic == topic
                and h.end is None
                and h.joined_at is not None
                and h.who.split("/")[0] in live
            }
        for name, views in self.views.items():
            if name in live:
                self.final_views[name] = {t: set(v) for t, v in views.items()}
        self.final_time = now

    # -- checking --------------------------------------------------------------------
    def _held(self, topic: str, user: str, t0: float, t1: float) -> bool:
        """Some tab held ``user`` on ``topic`` at some instant of [t0, t1]."""
        return any(
            h.topic == topic and h.user == user and h.start <= t1 and (h.end is None or h.end >= t0)
            for h in self.holds
        )

    def _faults(self) -> dict[int, list[tuple[float, float]]]:
        sc = self.world.scenario
        out: dict[int, list[tuple[float, float]]] = {}
        for f in self.world.faults:
            if f.at >= sc.duration:
                continue
            end = min(f.at + max(f.duration, 1.0), sc.duration) + 1.0
            targets = range(sc.instances) if f.target is None else [f.target]
            for n in targets:
                out.setdefault(n, []).append((f.at, end + (5.0 if f.target is None else 0.0)))
        return out

    def check(self) -> list[Verdict]:
        v1 = Verdict("PR-1", self.invariants["PR-1"], True)
        v2 = Verdict("PR-2", self.invariants["PR-2"], True)
        v4 = Verdict("PR-4", self.invariants["PR-4"], True)
        faults = self._faults()
        g = self.grace
        last_leave: dict[tuple[str, str, str], float] = {}
        for t in self.told:
            key = (t.observer, t.topic, t.user)
            if t.op == "join":
                v1.checked += 1
                if not self._held(t.topic, t.user, t.time - g, t.time) and v1.ok:
                    v1.ok, v1.time = False, t.time
                    v1.detail = f"{t.observer} shown {t.user} on {t.topic}, no tab held it"
                left = last_leave.get(key)
                if left is not None:
                    v2.checked += 1
                    if not self._held(t.topic, t.user, left - g, t.time) and v2.ok:
                        v2.ok, v2.time = False, t.time
                        v2.detail = (
                            f"{t.observer} told {t.user} joined {t.topic} again after "
                            f"its leave at {left:.3f}s with no holder since"
                        )
            else:
                last_leave[key] = t.time
                v4.checked += 1
                culprit = self._certain_holder(t, faults)
                if culprit is not None and v4.ok:
                    v4.ok, v4.time = False, t.time
                    v4.detail = (
                        f"{t.observer} told {t.user} left {t.topic} while {culprit} "
                        "held it with no fault nearby"
                    )
        return [v1, v2, self._pr3(), v4]

    def _certain_holder(self, t: Told, faults: dict[int, list[tuple[float, float]]]) -> str | None:
        g = self.grace
        window = (t.time - self.ttl - self.heartbeat - g, t.time + g)
        observer_node = int(t.observer.split("#")[0][1:])
        for node in (observer_node,):
            if any(a <= window[1] and b >= window[0] for a, b in faults.get(node, [])):
                return None
        for h in self.holds:
            if h.topic != t.topic or h.user != t.user or h.joined_at is None:
                continue
            if h.joined_at + g > t.time:
                continue
            if h.left_at is not None and h.left_at - g < t.time:
                continue
            if h.end is not None and h.end - g < t.time:
                continue
            if any(a <= window[1] and b >= window[0] for a, b in faults.get(h.node, [])):
                continue
            return h.who
        return None

    def _pr3(self) -> Verdict:
        v = Verdict("PR-3", self.invariants["PR-3"], True, kind="liveness")
        for name, views in sorted(self.final_views.items()):
            for topic, view in sorted(views.items()):
                v.checked += 1
                truth = self.final_truth.get(topic, set())
                if view != truth and v.ok:
                    v.ok = False
                    v.detail = (
                        f"{name} sees {sorted(view)} on {topic}; live holders are {sorted(truth)}"
                    )
        return v


def _remove_always_last(original: Any) -> Any:
    async def map_remove(self: Any, key: str, field: str, *, prefix: str | None = None) -> Any:
        result = await original(self, key, field, prefix=prefix)
        # the bug: no last-holder count, every leaver thinks it was the last
        return MapRemoval(removed=result.removed, remaining=0)

    return map_remove


def _put_many_without_ttl(original: Any) -> Any:
    async def map_put_many(self: Any, key: str, items: Any, *, ttl: float | None = None) -> None:
        await original(self, key, items, ttl=None)  # the bug: refreshed entries never expire

    return map_put_many


register(
    Mutant(
        "presence-leave-no-last-holder-check",
        "map_remove never counts the remaining holders: every leaver announces a leave",
        "presence-crash",
        "PR-4",
        "uwsx.memory.kv:MemoryKV.map_remove",
        _remove_always_last,
    )
)
register(
    Mutant(
        "presence-refresh-without-ttl",
        "heartbeat refreshes drop the deadline: a crashed instance's users stay forever",
        "presence-crash",
        "PR-3",
        "uwsx.memory.kv:MemoryKV.map_put_many",
        _put_many_without_ttl,
    )
)
