"""Backend restarts under each persistence mode: what survives, and which epoch follows."""

from __future__ import annotations

import pytest

from uwsx_sim.clock import Rng, SimClock
from uwsx_sim.model.persistence import Disk, sync_interval
from uwsx_sim.node import SimNode
from uwsx_sim.runner import explore, run_seed
from uwsx_sim.scenario import find_scenario
from uwsx_sim.world import World

from .probe import Script, probe_scenario, until
from .probe import run_script as _run_script

pytestmark = pytest.mark.usefixtures("probe")


def run_script(script: Script, **backend: object) -> World:
    return _run_script(script, backend=dict(backend))


# mode -> (a write at 0.2 s survives a crash at 6.5 s, a write at 6.2 s does)
SURVIVES = {
    "none": (False, False),
    "rdb": (True, False),  # snapshots at 5 s and 10 s
    "aof-everysec": (True, False),  # fsynced at 6 s, not yet at 7 s
    "aof-always": (True, True),
}


@pytest.mark.parametrize("mode", sorted(SURVIVES))
def test_restart_keeps_what_the_mode_synced(mode: str) -> None:
    early_kept, late_kept = SURVIVES[mode]

    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        await until(world, 0.2)
        await conn.kv.set("early", "1")
        await until(world, 6.2)
        await conn.kv.set("late", "1")
        generation = world.model.generation
        await until(world, 6.5)
        world.backend_restart()
        assert world.model.generation == generation + 1
        assert (await conn.kv.get("early") == "1") is early_kept
        assert (await conn.kv.get("late") == "1") is late_kept
        # the restarted server keeps persisting: a write synced before the next crash stays
        await conn.kv.set("after", "1")
        await until(world, 11.5)  # past the next snapshot (10 s) and fsyncs
        world.backend_restart()
        assert (await conn.kv.get("after") == "1") is (mode != "none")

    run_script(script, persistence=mode, snapshot_every="5s")


def test_everysec_loses_at_most_the_last_second() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        for i in range(30):  # one append every 100 ms from 0.05 s
            await until(world, 0.05 + 0.1 * i)
            await conn.log.append("l", "e", str(i), max_size=100)
        await until(world, 3.0)
        world.backend_restart()  # the crash comes at 3.0 s, last fsync at 3.0 s
        kept = [int(e.data) for e in await conn.log.read_after("l", 0)]
        assert kept == list(range(len(kept)))  # a prefix, nothing reordered
        # appends applied by 2.0 s were fsynced (i <= 19); the last second may be lost
        assert 20 <= len(kept) <= 30
        assert (await conn.log.bounds("l")).newest == len(kept)
        assert world.model.lost_writes == 30 - len(kept)

    run_script(script, persistence="aof-everysec")


@pytest.mark.parametrize("mode", ["rdb", "aof-everysec", "aof-always"])
def test_visible_epoch_changes_on_every_restart(mode: str) -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        await conn.log.append("l", "e", "{}", max_size=10)
        epoch = (await conn.log.bounds("l")).epoch
        await until(world, 6.0)
        world.backend_restart()
        # a crashed server comes back with a new replication id, whatever it kept
        assert (await conn.log.bounds("l")).epoch != epoch

    run_script(script, persistence=mode, epoch_visible=True)


def test_invisible_epoch_follows_the_data() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        await conn.log.append("old", "e", "1", max_size=10)  # before the 5 s snapshot
        await until(world, 6.0)
        await conn.log.append("old", "e", "2", max_size=10)  # after it
        await conn.log.append("new", "e", "1", max_size=10)  # counter born after it
        old_epoch = (await conn.log.bounds("old")).epoch
        new_epoch = (await conn.log.bounds("new")).epoch
        world.backend_restart()
        await conn.log.append("new", "e", "again", max_size=10)
        old = await conn.log.bounds("old")
        new = await conn.log.bounds("new")
        # the suffix of "old" is gone and nothing says so: the silent loss a data-derived
        # epoch cannot see (the counter survived)
        assert (old.newest, old.epoch) == (1, old_epoch)
        # the counter of "new" was lost entirely: recreated with a new incarnation
        assert new.newest == 1
        assert new.epoch != new_epoch

    run_script(script, persistence="rdb", snapshot_every="5s", epoch_visible=False)


def test_replicas_resync_from_the_restarted_primary() -> None:
    async def script(world: World, node: SimNode) -> None:
        conn = node.conn
        assert conn is not None
        await conn.kv.set("kept", "1")  # in the 2 s snapshot
        await until(world, 2.5)
        await conn.kv.set("unsynced", "1")
        await until(world, 3.0)  # replicated (lag 10 ms), but the next snapshot is at 4 s
        world.backend_restart()
        assert await conn.kv.get("kept") == "1"
        assert await conn.kv.get("unsynced") is None
        world.failover()  # the replica was resynced: it holds the restored state only
        await world.clock.sleep(1.0)
        assert await conn.kv.get("kept") == "1"
        assert await conn.kv.get("unsynced") is None
        await conn.kv.set("later", "1")
        await until(world, 12.0)
        world.backend_restart()  # the promoted replica persists on its own
        assert await conn.kv.get("later") == "1"

    run_script(
        script,
        persistence="rdb",
        snapshot_every="2s",
        replicas=1,
        replication_lag="10ms",
        failover_window="500ms",
    )


def test_sync_points() -> None:
    assert sync_interval("none") is None
    assert sync_interval("aof-always") == 0.0
    assert sync_interval("aof-everysec") == 1.0
    assert sync_interval("rdb", "30s") == 30.0
    with pytest.raises(ValueError, match="unknown persistence"):
        sync_interval("aof")
    with pytest.raises(ValueError, match="positive"):
        sync_interval("rdb", "0s")


def test_disk_sync_point_of_a_write() -> None:
    clock = SimClock(lambda: 0.0)  # due_for is arithmetic on the apply time
    rdb = Disk("d", clock, Rng(1, "d"), 5.0)
    assert [rdb.due_for(t) for t in (0.2, 5.0, 5.1)] == [5.0, 5.0, 10.0]
    always = Disk("a", clock, Rng(1, "a"), 0.0)
    assert always.due_for(3.25) == 3.25


def test_unknown_persistence_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown persistence"):
        run_seed(probe_scenario(backend={"persistence": "fsync-sometimes"}), 1)


def test_restart_scenario_passes_a_batch_of_seeds() -> None:
    ex = explore(find_scenario("replay-restart-aof"), range(4, 8), do_shrink=False)
    assert ex.failure is None, ex.failure
    assert ex.deterministic
