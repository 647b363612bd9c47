"""Deliberately broken memory ports, each registered as a throwaway backend scheme.

Every mutant breaks one guarantee a port docstring states (mostly atomicity: it awaits between
reading and writing, so concurrent clients interleave) and names the contract tests that must
catch it. ``test_mutants.py`` runs those tests against the mutant and expects them to fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from uwsx.hookspecs import hookimpl
from uwsx.memory.backend import CAPABILITIES, MemoryBackend
from uwsx.memory.kv import MemoryKV
from uwsx.memory.locks import MemoryLocks
from uwsx.memory.logs import LogState, MemorySortedLog, MemoryStream
from uwsx.memory.pubsub import MemoryPubSub, MemorySubscription
from uwsx.memory.queue import MemoryQueue
from uwsx.memory.store import open_store
from uwsx.ports.kv import BoundedPut, MapRemoval
from uwsx.ports.pubsub import LossHandler, MessageHandler
from uwsx.ports.queue import Job
from uwsx.ports.sorted_log import Appended, LogEntry
from uwsx.registry import BackendRegistry, BackendSpec

__all__ = ["MUTANTS", "Mutant", "MutantPlugin"]


async def _yield() -> None:
    """Give every other ready client a turn: the gap a non-atomic implementation leaves."""
    await asyncio.sleep(0)


class NonAtomicAppend(MemorySortedLog):
    """Reads the counter, yields, then writes it back: concurrent appends share seqs."""

    async def append(
        self,
        log: str,
        event: str,
        data: str,
        *,
        max_size: int,
        ttl: float | None = None,
        replicas: tuple[int, float] | None = None,
    ) -> Appended:
        state = self._state(log, create=True)
        assert state is not None
        seq = state.counter + 1
        await _yield()
        state.counter = seq
        state.entries.append(LogEntry(seq, event, data))
        return Appended(seq)


class CounterExpiresWithEntries(MemorySortedLog):
    """The original library's bug: the counter expires with the entries, so seqs restart."""

    def _state(self, log: str, *, create: bool) -> LogState | None:
        state = self._store.logs.get(self._id(log))
        assert state is None or isinstance(state, LogState)
        deadline = None if state is None else state.entries_deadline
        if state is not None and deadline is not None and deadline <= self._store.now():
            state.counter = 0
        return super()._state(log, create=create)


class NonAtomicDedup(MemoryStream):
    """Looks the request id up, yields, then appends: concurrent retries all append."""

    async def append_idempotent(
        self, log: str, event: str, data: str, *, producer_id: str, request_id: str, **kw: Any
    ) -> Appended:
        state = self._state(log, create=True)
        assert state is not None
        records, _ = state.dedup.get(producer_id, ({}, None))
        if request_id in records:
            return Appended(records[request_id], duplicate=True)
        await _yield()
        appended = await self.append(log, event, data, max_size=kw["max_size"])
        state.dedup.setdefault(producer_id, ({}, None))[0][request_id] = appended.seq
        return appended


class RemoveCountsLater(MemoryKV):
    """Removes the field, yields, then counts: both of the last two holders see 'gone'."""

    async def map_remove(self, key: str, field: str, *, prefix: str | None = None) -> MapRemoval:
        entry = self._map(key, create=False)
        if entry is None:
            return MapRemoval(False, 0)
        removed = entry.fields.pop(field, None) is not None
        await _yield()
        return MapRemoval(removed, self._count(entry.fields, prefix, None))


class NonAtomicKV(MemoryKV):
    """``set_if_absent`` and ``map_put_bounded`` check, yield, then write."""

    async def set_if_absent(
        self, key: str, value: str, *, ttl: float | None = None
    ) -> tuple[bool, str | None]:
        current = await self.get(key)
        if current is not None:
            return False, current
        await _yield()
        await self.set(key, value, ttl=ttl)
        return True, None

    async def map_put_bounded(
        self, key: str, field: str, value: str, *, max_fields: int | None, **kw: Any
    ) -> BoundedPut:
        count = await self.map_count(key)
        if max_fields is not None and count >= max_fields:
            return BoundedPut("full", {})
        await _yield()
        await self.map_put(key, field, value, ttl=kw.get("ttl"))
        return BoundedPut("stored", await self.map_items(key))


class ReleaseWithoutOwnerCheck(MemoryLocks):
    """Drops whatever lease is live, whoever asks."""

    async def release(self, key: str, owner: str) -> bool:
        return self._store.leases.pop(self._k(key), None) is not None


class FenceRestartsWhenFree(MemoryLocks):
    """Numbers fences per holder instead of per key: after a release they start over."""

    def _next_fence(self, fence_key: str) -> int:
        live = self._live(fence_key)
        return 1 if live is None else live[1] + 1


class NonAtomicClaim(MemoryQueue):
    """Picks claimable jobs, yields, then takes them: concurrent workers share jobs."""

    async def claim(self, queue: str, *, limit: int, visibility: float) -> list[Job]:
        now = self._store.now()
        rows = [
            r
            for r in self._s.jobs.values()
            if r.queue == queue and (r.claimed_until is None or r.claimed_until < now)
        ][:limit]
        await _yield()
        out = []
        for row in rows:
            row.attempts += 1
            row.claimed_until = now + visibility
            row.token = self._store.ids.hex(8)
            out.append(
                Job(str(row.id), queue, row.payload, None, row.attempts, row.created_at, row.token)
            )
        return out


class TokenBlindQueue(MemoryQueue):
    """``complete``/``fail``/``extend`` act on any claimed job, ignoring the token."""

    def _held(self, claims: Sequence[tuple[str, str]]) -> list[Any]:
        jobs = self._s.jobs
        return [jobs[int(i)] for i, _ in claims if i.isdigit() and int(i) in jobs]


class LenientTasks(MemoryQueue):
    """``task_heartbeat`` revives a lapsed fence."""

    async def task_heartbeat(self, task_id: str, fence: str, *, fence_ttl: float) -> bool:
        row = self._running(task_id, fence)
        if row is None:
            return False
        self._deadlines[task_id] = self._store.now() + fence_ttl
        self._touch(row, fence_expires_at=self._store.clock.wall() + fence_ttl)
        return True


class FragileSubscription(MemorySubscription):
    """Lets a handler's exception escape the delivery loop, stranding later messages."""

    def _drain(self) -> None:
        self._scheduled = False
        while self._queue:
            channel, message = self._queue.popleft()
            self._handler(channel, message)


class FragilePubSub(MemoryPubSub):
    async def subscribe(
        self,
        channels: Any,
        handler: MessageHandler,
        *,
        sharded: bool = False,
        on_loss: LossHandler | None = None,
    ) -> MemorySubscription:
        sub = FragileSubscription(self, handler, sharded=sharded, on_loss=on_loss)
        self._subs[sub.id] = sub
        await sub.add(list(channels))
        return sub


Install = Callable[[MemoryBackend], None]


@dataclass(frozen=True, slots=True)
class Mutant:
    """A broken port: ``install`` swaps it into a fresh memory backend; ``tests`` of
    ``contract`` must fail on it (and pass on the real memory backend)."""

    scheme: str
    contract: str
    tests: tuple[str, ...]
    install: Install


def _swap(attr: str, make: Callable[[MemoryBackend], object]) -> Install:
    def install(backend: MemoryBackend) -> None:
        setattr(backend, attr, make(backend))

    return install


def _locks(cls: type[MemoryLocks]) -> Install:
    return _swap("_locks", lambda b: cls(b.store, b.key_prefix, session=b.store.ids.hex(8)))


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "mutant-append",
        "SortedLogContract",
        ("test_log_concurrent_appends_have_no_gap_or_duplicate",),
        _swap("_log", lambda b: NonAtomicAppend(b.store, b.key_prefix)),
    ),
    Mutant(
        "mutant-counter-ttl",
        "SortedLogContract",
        ("test_log_entries_expire_but_counter_survives",),
        _swap("_log", lambda b: CounterExpiresWithEntries(b.store, b.key_prefix)),
    ),
    Mutant(
        "mutant-dedup",
        "StreamContract",
        ("test_stream_concurrent_duplicates_never_advance_the_counter",),
        _swap("_stream", lambda b: NonAtomicDedup(b.store, b.key_prefix)),
    ),
    Mutant(
        "mutant-map-remove",
        "KVContract",
        ("test_kv_map_remove_of_last_two_holders_reports_gone_once",),
        _swap("_kv", lambda b: RemoveCountsLater(b.store, b.key_prefix)),
    ),
    Mutant(
        "mutant-kv-race",
        "KVContract",
        (
            "test_kv_concurrent_set_if_absent_has_one_winner",
            "test_kv_concurrent_map_put_bounded_never_exceeds_bound",
        ),
        _swap("_kv", lambda b: NonAtomicKV(b.store, b.key_prefix)),
    ),
    Mutant(
        "mutant-release",
        "LocksContract",
        (
            "test_locks_release_by_other_owner_changes_nothing",
            "test_locks_contenders_never_both_hold",
        ),
        _locks(ReleaseWithoutOwnerCheck),
    ),
    Mutant(
        "mutant-fence",
        "LocksContract",
        ("test_locks_fences_strictly_increase",),
        _locks(FenceRestartsWhenFree),
    ),
    Mutant(
        "mutant-claim",
        "QueueContract",
        ("test_queue_concurrent_claims_never_share_a_job",),
        _swap("_queue", lambda b: NonAtomicClaim(b.store, b.key_prefix)),
    ),
    Mutant(
        "mutant-token",
        "QueueContract",
        (
            "test_queue_stale_claimant_cannot_act",
            "test_queue_wrong_token_or_unknown_id_does_nothing",
        ),
        _swap("_queue", lambda b: TokenBlindQueue(b.store, b.key_prefix)),
    ),
    Mutant(
        "mutant-heartbeat",
        "QueueContract",
        ("test_queue_task_heartbeat_extends_only_a_live_fence",),
        _swap("_queue", lambda b: LenientTasks(b.store, b.key_prefix)),
    ),
    Mutant(
        "mutant-handler",
        "PubSubContract",
        ("test_pubsub_handler_exception_does_not_stop_delivery",),
        _swap("_pubsub", lambda b: FragilePubSub(b.store, b.key_prefix)),
    ),
)


def _opener(mutant: Mutant) -> Callable[..., Any]:
    async def open_mutant(target: str, *, key_prefix: str = "", **options: Any) -> MemoryBackend:
        backend = MemoryBackend(open_store(urlsplit(target).netloc), key_prefix=key_prefix)
        mutant.install(backend)
        return backend

    return open_mutant


class MutantPlugin:
    """Registers one throwaway backend per mutant, through the ordinary plugin hook."""

    @hookimpl
    def uwsx_register_backends(self, registry: BackendRegistry) -> None:
        for mutant in MUTANTS:
            registry.register(
                BackendSpec(
                    name=mutant.scheme,
                    schemes=(mutant.scheme,),
                    factory=_opener(mutant),
                    capabilities=CAPABILITIES,
                    description="a deliberately broken memory backend (contract self-test)",
                )
            )
