"""The world of one run: backend model, instances, links, clocks, faults, phases, history.

:meth:`World.main` is the run. It must execute on a :class:`~uwsx_sim.loop.SimLoop`:

1. **chaos**: every instance runs the workloads while the fault schedule plays;
2. **heal**: every fault is ended (partitions healed, pauses resumed, the dead restarted,
   clocks resynchronised) and the workloads keep running;
3. **liveness**: faults stay off; convergence conditions must hold by the end;
4. **final**: workloads take last observations, then every instance is stopped dead and its
   tasks disposed of inside the loop.

All randomness comes from named streams of the master seed (:meth:`stream`).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

import uwsx
from uwsx import _runtime
from uwsx._runtime import Runtime
from uwsx._runtime.ids import SeededIds
from uwsx.memory import MemoryBackend, MemoryStore, drop_store, install_store
from uwsx_sim.clock import BuggifySites, Rng, SimClock, derive_seed
from uwsx_sim.history import History, Trace
from uwsx_sim.loop import DEAD, NodeRef, SimLoop
from uwsx_sim.model.client import SimConnection
from uwsx_sim.model.persistence import sync_interval
from uwsx_sim.model.replication import BackendModel
from uwsx_sim.nemesis import Fault, apply_fault, draw_schedule, heal_all
from uwsx_sim.net import Link, LinkParams
from uwsx_sim.node import SimNode
from uwsx_sim.scenario import Scenario, parse_range, pick
from uwsx_sim.workloads import build_workload
from uwsx_sim.workloads.base import Verdict, Workload

__all__ = ["CURRENT_WORLD", "World"]

#: The world whose loop is running (``sim://`` URLs resolve against it).
CURRENT_WORLD: contextvars.ContextVar[World | None] = contextvars.ContextVar(
    "uwsx_sim_world", default=None
)


class World:
    """Everything one seed of one scenario needs.

    :param faults: an explicit fault schedule (replay, shrinking); drawn from the seed if None.
    """

    def __init__(self, scenario: Scenario, seed: int, *, faults: list[Fault] | None = None) -> None:
        self.scenario = scenario
        self.seed = seed
        self.trace = Trace()
        self.history = History(self.trace)
        self.backend_ops = 0
        self.phase = "init"
        self.nodes: list[SimNode] = []
        self.graveyard: list[NodeRef] = []
        self.fault_counts: dict[str, int] = {}
        self.base_skew: list[float] = []
        self.buggify = BuggifySites(derive_seed(seed, "buggify"))
        self.failure: str | None = None
        backend = scenario.backend
        # a bad persistence knob is a config error before anything runs
        sync_interval(str(backend.get("persistence", "none")), backend.get("snapshot_every", "5s"))
        config = self.stream("config")
        self.faults = (
            faults
            if faults is not None
            else draw_schedule(
                scenario.nemeses,
                self.stream("faults"),
                instances=scenario.instances,
                chaos=scenario.duration,
                swarm=scenario.swarm,
            )
        )
        self.workloads: list[Workload] = [
            build_workload(self, spec, config.split(f"workload{i}"))
            for i, spec in enumerate(scenario.workloads)
        ]
        self._config = config
        self._loop: SimLoop | None = None
        self.context = contextvars.Context()
        self.model: BackendModel
        self.clock: SimClock

    def stream(self, name: str) -> Rng:
        return Rng.stream(self.seed, name)

    @property
    def loop(self) -> SimLoop:
        assert self._loop is not None, "the world is not running"
        return self._loop

    def later(self, when: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` at virtual time ``when`` in the world's context."""
        self.loop.call_at(when, fn, *args, context=self.context)

    # -- the run -------------------------------------------------------------------
    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        if not isinstance(loop, SimLoop):
            raise TypeError("World.main must run on a uwsx_sim.loop.SimLoop")
        self._loop = loop
        self.clock = SimClock(loop.time)
        world_rt = Runtime(
            clock=self.clock,
            ids=SeededIds(self.stream("world-ids")),
            random=self.stream("world-random"),
            name="world",
        )
        token = CURRENT_WORLD.set(self)
        try:
            with _runtime.use(world_rt):
                self.context = contextvars.copy_context()
                await self._setup()
                await self._phases()
        finally:
            CURRENT_WORLD.reset(token)
            self._teardown()

    async def _setup(self) -> None:
        sc = self.scenario
        b = sc.backend
        cfg = self._config.split("backend")
        lag = parse_range(b.get("replication_lag", "1ms..50ms"))
        self.model = BackendModel(
            f"sim-{self.seed:x}",
            self.clock,
            self.stream("backend"),
            replicas=int(b.get("replicas", 0)),
            lag=lag,
            epoch_visible=bool(b.get("epoch_visible", True)),
            persistence=str(b.get("persistence", "none")),
            snapshot_every=b.get("snapshot_every", "5s"),
        )
        self.model.on_switch = self._switch_all
        self._failover_window = pick(cfg, b.get("failover_window", "0s..2s"))
        install_store(self.model.primary)
        params = LinkParams.from_mapping(
            {
                k: v if not isinstance(v, str) else pick(cfg.split(f"link:{k}"), v)
                for k, v in sc.link.items()
            }
        )
        clock_cfg = self._config.split("clocks")
        max_skew = pick(clock_cfg, sc.clock.get("max_skew", "0s"))
        max_drift = float(sc.clock.get("max_drift", 0.0))
        for i in range(sc.instances):
            skew = clock_cfg.uniform(-max_skew, max_skew) if max_skew else 0.0
            rate = 1.0 + (clock_cfg.uniform(-max_drift, max_drift) if max_drift else 0.0)
            clock = SimClock(self.loop.time, rate=rate, wall_offset=skew)
            self.base_skew.append(skew)
            node = SimNode(self, i, clock, Link(params, self.stream(f"net:n{i}")))
            self.nodes.append(node)

    async def _phases(self) -> None:
        sc = self.scenario
        loop = self.loop
        self.phase = "chaos"
        self.trace.event(0.0, "*", "#", f"chaos for {sc.duration:g}s")
        for node in self.nodes:
            loop.call_soon(node.start, context=self.context)
        for fault in self.faults:
            if fault.at < sc.duration:
                self.later(fault.at, apply_fault, self, fault)
        await self.clock.sleep(sc.duration)
        self._set_phase("heal")
        heal_all(self)
        await self.clock.sleep(sc.heal)
        self._set_phase("liveness")
        await self.clock.sleep(sc.liveness)
        self._set_phase("final")
        for w in self.workloads:
            await w.final()

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.trace.event(self.loop.time(), "*", "#", f"phase {phase}")
        for w in self.workloads:
            w.on_phase(phase)

    def _teardown(self) -> None:
        if self._loop is None:
            return
        loop = self._loop
        for node in self.nodes:
            for root in node.roots:
                # a workload or feature error that ended an instance's root task fails SIM-1
                if root.done() and not root.cancelled() and root.exception() is not None:
                    loop.errors.append(
                        {"message": f"{node.name}: root task failed", "exception": root.exception()}
                    )
        for node in self.nodes:
            if node.up:
                if node.conn is not None:
                    node.conn.sever()
                loop.kill(node.ref)
                self.graveyard.append(node.ref)
        for ref in self.graveyard:
            if ref.state == DEAD:
                loop.bury(ref)
        if hasattr(self, "model"):
            drop_store(self.model.primary.name)

    # -- instances -------------------------------------------------------------------
    async def open_connection(
        self, node: SimNode, *, key_prefix: str | None = None
    ) -> SimConnection:
        """The instance's backend: ``uwsx.connect`` on the model's primary, behind the link."""
        prefix = (
            key_prefix
            if key_prefix is not None
            else str(self.scenario.backend.get("key_prefix", "app:"))
        )
        store = self.model.primary
        inner = await uwsx.connect(f"memory://{store.name}", key_prefix=prefix, store=store)
        assert isinstance(inner, MemoryBackend)
        return SimConnection(self, node, inner, prefix)

    async def run_instance(self, node: SimNode) -> None:
        tasks = [self.loop.create_task(w.run_instance(node)) for w in self.workloads]
        await asyncio.gather(*tasks)

    def observe(
        self, conn: SimConnection, label: str, record: Any, value: Any, at: float, serial: int
    ) -> None:
        for w in self.workloads:
            w.observe(conn, label, record, value, at, serial)

    # -- faults needing the world ------------------------------------------------------
    def failover(self) -> None:
        if self.model.failover() is None:
            self.trace.event(self.loop.time(), "*", "F", "failover skipped: no replicas")

    def _switch_all(self, store: MemoryStore) -> None:
        install_store(store)
        rng = self.stream(f"failover{self.model.failovers}")
        for node in self.nodes:
            delay = rng.uniform(0.0, self._failover_window)
            self.later(self.loop.time() + delay, self._switch, node, node.ref, store)

    def _switch(self, node: SimNode, ref: NodeRef, store: MemoryStore) -> None:
        if node.ref is ref and node.conn is not None and store is self.model.primary:
            node.conn.switch(store)

    def backend_restart(self, downtime: float = 0.0) -> None:
        """The backend crashes and comes back after ``downtime`` with what its persistence
        kept: every connection drops; clients reconnect to the restarted server once it
        accepts connections again."""
        old = self.model.primary
        store = self.model.restart(downtime)
        if store is not old:
            install_store(store)
        for node in self.nodes:
            if node.conn is not None:
                if store is old:
                    node.conn.reset()
                else:
                    node.conn.switch(store)

    def keepalive_expired(self, node: SimNode, gen: int) -> None:
        if node.link.partitioned and node.link.partition_gen == gen and node.conn is not None:
            self.trace.event(self.loop.time(), node.name, "r", "keepalive: connection reset")
            node.conn.reset()

    def unpartition(self, node: SimNode, gen: int) -> None:
        if node.link.partition_gen != gen:
            return
        node.link.partitioned = False
        self.trace.event(self.loop.time(), node.name, "x", "partition healed")
        if node.conn is not None:
            node.conn.flush_held()

    # -- results ---------------------------------------------------------------------
    def check(self) -> list[Verdict]:
        verdicts: list[Verdict] = []
        errors = self._loop.errors if self._loop is not None else []
        verdicts.append(
            Verdict(
                "SIM-1",
                "no unhandled exception in any task or callback",
                not errors,
                checked=1,
                detail="; ".join(str(e.get("exception") or e.get("message")) for e in errors[:3]),
            )
        )
        verdicts.append(
            Verdict(
                "SIM-2",
                "the run completed (no deadlock, no crash of the simulator)",
                self.failure is None,
                checked=1,
                detail=self.failure or "",
                kind="liveness",
            )
        )
        wanted = self.scenario.checks
        for w in self.workloads:
            for v in w.check():
                names = wanted.get(w.feature)
                if names is None or any(n.split()[0] == v.invariant for n in names):
                    verdicts.append(v)
        return verdicts
