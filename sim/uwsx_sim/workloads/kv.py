"""A raw KV load (no feature): counters and registers, for throughput runs and the counter check.

Every instance runs ``workers_per_instance`` workers doing ``incr`` on shared counters,
``set``/``get`` on registers, with ``think`` between ops (``rate`` ops/s per instance is the
usual way to set it). It is what ``bench/sim_throughput.py`` drives.

Invariant (Jepsen ``counter``):

* KV-1 every counter's final value lies between the sum of acknowledged increments and that
  sum plus the increments whose outcome is unknown (``info``); failed ones never count.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from uwsx.errors import Indeterminate, Unavailable
from uwsx_sim.clock import Rng
from uwsx_sim.history import OpType
from uwsx_sim.workloads.base import Verdict, Workload

if TYPE_CHECKING:
    from uwsx_sim.node import SimNode
    from uwsx_sim.world import World

__all__ = ["KVWorkload"]


class KVWorkload(Workload):
    feature = "kv"
    invariants: ClassVar[dict[str, str]] = {
        "KV-1": "counter = acknowledged increments, plus at most the unknown ones",
    }

    def __init__(self, world: World, spec: dict[str, Any], rng: Rng) -> None:
        super().__init__(world, spec, rng)
        self.workers = self.int_knob("workers_per_instance", 2)
        rate = float(self.spec.get("rate", 100.0))  # ops per second per instance
        self.mean_think = self.workers / rate if rate > 0 else 0.05
        self.counters = [f"ctr:{i}" for i in range(self.int_knob("counters", 4))]
        self.registers = [f"reg:{i}" for i in range(self.int_knob("registers", 8))]
        self.acked: dict[str, int] = {}
        self.unknown: dict[str, int] = {}
        self.final_values: dict[str, int] = {}

    async def run_instance(self, node: SimNode) -> None:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._worker(node, w)) for w in range(self.workers)]
        await asyncio.gather(*tasks)

    async def _worker(self, node: SimNode, w: int) -> None:
        rt = node.rt()
        conn = node.conn
        assert conn is not None
        kv = conn.kv
        rng = rt.random
        proc = f"{node.name}#{node.incarnation}/{w}"
        history = self.history
        sleep = rt.clock.sleep
        while self.phase != "final":
            await sleep(2.0 * self.mean_think * rng.random())
            roll = rng.random()
            if roll < 0.4:
                key = self.counters[int(rng.random() * len(self.counters))]
                inv = history.invoke(node.name, node.incarnation, proc, "incr", key, self.now())
                try:
                    value = await kv.incr(key)
                except Indeterminate:
                    self.unknown[key] = self.unknown.get(key, 0) + 1
                    history.complete(inv, "info", None, self.now())
                    continue
                except Unavailable:
                    history.complete(inv, "fail", None, self.now())
                    continue
                self.acked[key] = self.acked.get(key, 0) + 1
                history.complete(inv, "ok", value, self.now())
            else:
                key = self.registers[int(rng.random() * len(self.registers))]
                write = roll < 0.7
                f = "write" if write else "read"
                inv = history.invoke(node.name, node.incarnation, proc, f, key, self.now())
                try:
                    if write:
                        await kv.set(key, proc)
                        result: Any = proc
                    else:
                        result = await kv.get(key)
                except (Indeterminate, Unavailable) as exc:
                    kind: OpType = "info" if isinstance(exc, Indeterminate) else "fail"
                    history.complete(inv, kind, None, self.now())
                    continue
                history.complete(inv, "ok", result, self.now())

    async def final(self) -> None:
        from uwsx.memory.kv import MemoryKV

        prefix = str(self.world.scenario.backend.get("key_prefix", "app:"))
        kv = MemoryKV(self.world.model.primary, prefix)
        for key in self.counters:
            value = await kv.get(key)
            self.final_values[key] = int(value) if value is not None else 0

    def check(self) -> list[Verdict]:
        v = Verdict("KV-1", self.invariants["KV-1"], True)
        if self.world.model.failovers:
            v.extra["skipped"] = "failover loses increments by design (no DURABLE_ACK)"
            return [v]
        for key in self.counters:
            v.checked += 1
            low = self.acked.get(key, 0)
            high = low + self.unknown.get(key, 0)
            got = self.final_values.get(key, 0)
            if not low <= got <= high and v.ok:
                v.ok = False
                v.detail = f"{key} = {got}, expected between {low} and {high}"
        return [v]
