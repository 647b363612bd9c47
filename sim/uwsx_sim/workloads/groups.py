"""Broadcast groups (:class:`uwsx.features.groups.Group`) with a capacity, on every instance.

Each incarnation runs ``members_per_instance`` clients that join the capped group ``main``
(``max_members``), stay a while and leave, plus clients of a second group ``closing`` that
instance ``n0`` dissolves at ``dissolve_at``. The backend's apply log is the ground truth: after
every write to a members map the checker counts the live fields at that backend instant.

Invariants (``uwsx.features.groups`` docstring):

* GR-1 live members never exceed ``max_members`` (checked after every write to the map);
* GR-2 after ``dissolve`` stored the closed flag, no join is admitted anywhere;
* GR-3 a member removed by ``leave`` is never written again (no heartbeat resurrection);
* GR-4 a crashed instance's members stop counting within ``member_ttl`` (plus the heartbeat
  slack of a write in flight when it crashed).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from uwsx.features.groups import Group
from uwsx.memory.kv import MemoryKV
from uwsx.platform import LocalPlatform
from uwsx.ports.kv import BoundedPut, MapRemoval
from uwsx_sim.clock import Rng
from uwsx_sim.model.replication import run_now
from uwsx_sim.mutants import Mutant, register
from uwsx_sim.scenario import parse_range
from uwsx_sim.workloads.base import Verdict, Workload

if TYPE_CHECKING:
    from uwsx_sim.model.client import SimConnection
    from uwsx_sim.node import SimNode
    from uwsx_sim.world import World

__all__ = ["GroupsWorkload"]


class GroupsWorkload(Workload):
    feature = "groups"
    expected_probes: ClassVar[tuple[str, ...]] = ("main: join refused",)
    invariants: ClassVar[dict[str, str]] = {
        "GR-1": "live members never exceed max_members",
        "GR-2": "after dissolve, no join is admitted anywhere",
        "GR-3": "a member removed by leave is never written again",
        "GR-4": "a crashed instance's members stop counting within member_ttl",
    }

    def __init__(self, world: World, spec: dict[str, Any], rng: Rng) -> None:
        super().__init__(world, spec, rng)
        self.max_members = self.int_knob("max_members", 4)
        self.member_ttl = self.duration("member_ttl", "3s")
        self.clients = self.int_knob("members_per_instance", 2)
        self.hold = parse_range(self.spec.get("hold", "500ms..4s"))
        self.think = parse_range(self.spec.get("think", "200ms..1.5s"))
        self.dissolve_at = self.duration("dissolve_at", f"{world.scenario.duration * 0.6}s")
        #: instance id of each Group object -> (node index, incarnation)
        self.owners: dict[str, tuple[int, int]] = {}
        self.keys: dict[str, str] = {}  # members key -> group name
        self.closed_keys: dict[str, str] = {}
        self.closed_at: dict[str, float] = {}
        self.removed: dict[str, float] = {}  # member field -> when leave removed it
        self.violations: dict[str, tuple[float, str]] = {}
        self.counts = 0
        self._last = ""

    async def run_instance(self, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        platform = LocalPlatform()
        main = Group(conn, "main", max_members=self.max_members, member_ttl=self.member_ttl)
        closing = Group(conn, "closing", member_ttl=self.member_ttl)
        for group in (main, closing):
            self.owners[group.instance_id] = (node.index, node.incarnation)
            self.keys[group._members_key] = group.name
            self.closed_keys[group._closed_key] = group.name
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._client(node, main, platform, i)) for i in range(self.clients)
        ]
        tasks.append(loop.create_task(self._client(node, closing, platform, 99)))
        if node.index == 0:
            tasks.append(loop.create_task(self._dissolver(node, closing, platform)))
        await asyncio.gather(*tasks)

    async def _client(self, node: SimNode, group: Group, platform: LocalPlatform, i: int) -> None:
        rt = node.rt()
        proc = f"{node.name}#{node.incarnation}/{group.name}/{i}"
        while self.phase != "final":
            await rt.clock.sleep(rt.random.uniform(*self.think))
            conn = platform.connect()
            inv = self.history.invoke(
                node.name, node.incarnation, proc, "join", group.name, self.now()
            )
            try:
                joined = await group.join(conn, platform)
            except Exception as exc:
                self.history.complete(inv, "info", repr(exc), self.now())
                platform.disconnect(conn)
                continue
            self.history.complete(inv, "ok", joined, self.now())
            if not joined:
                self.sometimes(f"{group.name}: join refused")
                platform.disconnect(conn)
                continue
            await rt.clock.sleep(rt.random.uniform(*self.hold))
            inv = self.history.invoke(
                node.name, node.incarnation, proc, "leave", group.name, self.now()
            )
            try:
                await group.leave(conn, platform)
            except Exception as exc:
                self.history.complete(inv, "info", repr(exc), self.now())
            else:
                self.history.complete(inv, "ok", None, self.now())
            platform.disconnect(conn)

    async def _dissolver(self, node: SimNode, group: Group, platform: LocalPlatform) -> None:
        rt = node.rt()
        delay = self.dissolve_at - self.now()
        if delay <= 0:
            return
        await rt.clock.sleep(delay)
        inv = self.history.invoke(
            node.name, node.incarnation, "dissolver", "dissolve", group.name, self.now()
        )
        try:
            await group.dissolve(platform)
        except Exception as exc:
            self.history.complete(inv, "info", repr(exc), self.now())
        else:
            self.history.complete(inv, "ok", None, self.now())

    # -- ground truth ------------------------------------------------------------------
    def observe(
        self, conn: SimConnection, label: str, record: Any, value: Any, at: float, serial: int
    ) -> None:
        if not label.startswith("kv.") or conn.inner.store is not self.world.model.primary:
            return
        _, _, method, args, _kwargs = record
        key = args[0] if args else None
        if method == "set" and key in self.closed_keys:
            self.closed_at.setdefault(self.closed_keys[key], at)
            return
        if key not in self.keys:
            return
        name = self.keys[key]
        if method == "map_put_bounded" and isinstance(value, BoundedPut):
            closed = self.closed_at.get(name)
            if value.status == "stored" and closed is not None and at > closed:
                self._violate(
                    "GR-2", at, f"{name}: {args[1]} admitted after the dissolve at {closed:.3f}s"
                )
        if method == "map_remove" and isinstance(value, MapRemoval) and value.removed:
            self.removed[args[1]] = at
        written: list[str] = []
        if method in ("map_put", "map_put_bounded") and len(args) > 1:
            written = [args[1]]
        elif method == "map_put_many" and len(args) > 1:
            written = list(args[1])
        for field in written:
            gone = self.removed.get(field)
            if gone is not None and at > gone:
                self._violate(
                    "GR-3",
                    at,
                    f"{name}: member {field} written again after its leave at {gone:.3f}s",
                )
        if written:
            self._last = f"{method} by {conn.who}"
            self._count(conn, key, name, at)

    def _count(self, conn: SimConnection, key: str, name: str, at: float) -> None:
        kv = MemoryKV(conn.inner.store, conn.key_prefix)
        fields = run_now(kv.map_items(key))
        self.counts += 1
        if name == "main" and len(fields) > self.max_members:
            self._violate(
                "GR-1",
                at,
                f"{len(fields)} live members > max {self.max_members} "
                f"after {self._last}: "
                f"{sorted(fields)}",
            )
        grace = self.member_ttl + 1.0
        for field in fields:
            owner = self.owners.get(field.rsplit(":", 1)[0])
            if owner is None:
                continue
            node = self.world.nodes[owner[0]]
            crashes = [t for t in node.crashed_at if node_incarnation_at(node, t) == owner[1]]
            if crashes and at > crashes[0] + grace:
                self._violate(
                    "GR-4",
                    at,
                    f"{name}: member {field} of crashed n{owner[0]}#{owner[1]} still counts",
                )

    def _violate(self, invariant: str, at: float, detail: str) -> None:
        self.violations.setdefault(invariant, (at, detail))

    def check(self) -> list[Verdict]:
        out = []
        for inv, text in self.invariants.items():
            v = Verdict(
                inv,
                text,
                inv not in self.violations,
                checked=self.counts,
                kind="liveness" if inv == "GR-4" else "safety",
            )
            if inv in self.violations:
                v.time, v.detail = self.violations[inv]
            out.append(v)
        return out


def node_incarnation_at(node: Any, t: float) -> int:
    """Which incarnation of ``node`` was running at virtual time ``t``."""
    inc = 0
    for start in node.started_at:
        if start <= t:
            inc += 1
    return inc


def _bounded_without_cap(original: Any) -> Any:
    async def map_put_bounded(
        self: Any,
        key: str,
        field: str,
        value: str,
        *,
        max_fields: int | None,
        ttl: float | None = None,
        unless_key: str | None = None,
    ) -> BoundedPut:
        # the bug: the cap is not enforced at admission
        result: BoundedPut = await original(
            self, key, field, value, max_fields=None, ttl=ttl, unless_key=unless_key
        )
        return result

    return map_put_bounded


register(
    Mutant(
        "groups-no-capacity-check",
        "the bounded put ignores max_fields",
        "groups-crash",
        "GR-1",
        "uwsx.memory.kv:MemoryKV.map_put_bounded",
        _bounded_without_cap,
    )
)
