"""The Locks port contract: leases with owner tokens, strictly increasing fences, session locks.

Mutual exclusion is checked the way a protected resource sees it: every contender records
itself as the holder of a shared resource while it believes it holds the lease, and a second
concurrent holder is an immediate failure.
"""

from __future__ import annotations

import math

import pytest

from uwsx import _runtime
from uwsx.errors import UnsupportedBackendError
from uwsx.ports.backend import Backend, Capability
from uwsx.ports.locks import Lease, Locks, SessionLock
from uwsx.testing.contract._base import (
    TTL_SLACK,
    BackendOpener,
    ContractBase,
    bad_input,
    gather,
    locks_of,
)

__all__ = ["LocksContract"]


class LocksContract(ContractBase):
    """Every operation of :class:`uwsx.ports.Locks` (see its module docstring)."""

    async def test_locks_acquire_free_key_grants_lease(self, backend: Backend) -> None:
        locks = locks_of(backend)
        lease = await locks.acquire("res", "owner-1", ttl=30.0)
        assert lease is not None
        assert (lease.key, lease.owner) == ("res", "owner-1")
        assert lease.ttl == pytest.approx(30.0, abs=TTL_SLACK)
        assert isinstance(lease.fence, int)
        assert lease.fence >= 1
        holder = await locks.holder("res")
        assert holder is not None
        assert (holder.owner, holder.fence) == ("owner-1", lease.fence)
        assert 0 < holder.ttl <= 30.0 + TTL_SLACK

    async def test_locks_acquire_of_held_key_returns_none(self, backend: Backend) -> None:
        locks = locks_of(backend)
        first = await locks.acquire("res", "a", ttl=30.0)
        assert first is not None
        assert await locks.acquire("res", "b", ttl=30.0) is None
        assert await locks.acquire("res", "a", ttl=30.0) is None, "not re-entrant either"
        holder = await locks.holder("res")
        assert holder is not None
        assert (holder.owner, holder.fence) == ("a", first.fence)

    async def test_locks_holder_of_free_key_is_none(self, backend: Backend) -> None:
        assert await locks_of(backend).holder("free") is None

    async def test_locks_renew_by_owner_extends_and_keeps_fence(self, backend: Backend) -> None:
        locks = locks_of(backend)
        lease = await locks.acquire("res", "a", ttl=5.0)
        assert lease is not None
        assert await locks.renew("res", "a", ttl=60.0) is True
        holder = await locks.holder("res")
        assert holder is not None
        assert holder.fence == lease.fence
        assert 5.0 < holder.ttl <= 60.0 + TTL_SLACK, holder

    async def test_locks_renew_by_other_owner_or_of_free_key_fails(self, backend: Backend) -> None:
        locks = locks_of(backend)
        assert await locks.renew("free", "a", ttl=30.0) is False
        assert await locks.holder("free") is None, "renew must not create a lease"
        await locks.acquire("res", "a", ttl=5.0)
        assert await locks.renew("res", "b", ttl=60.0) is False
        holder = await locks.holder("res")
        assert holder is not None
        assert holder.owner == "a"
        assert holder.ttl <= 5.0 + TTL_SLACK, "a refused renew must not extend the lease"

    async def test_locks_release_by_owner_frees_key(self, backend: Backend) -> None:
        locks = locks_of(backend)
        await locks.acquire("res", "a", ttl=30.0)
        assert await locks.release("res", "a") is True
        assert await locks.holder("res") is None
        assert await locks.release("res", "a") is False
        assert await locks.acquire("res", "b", ttl=30.0) is not None

    async def test_locks_release_by_other_owner_changes_nothing(self, backend: Backend) -> None:
        locks = locks_of(backend)
        lease = await locks.acquire("res", "a", ttl=30.0)
        assert lease is not None
        assert await locks.release("res", "b") is False
        assert await locks.release("free", "b") is False
        holder = await locks.holder("res")
        assert holder is not None, "a non-owner's release dropped the lease"
        assert (holder.owner, holder.fence) == ("a", lease.fence)
        assert await locks.acquire("res", "b", ttl=30.0) is None

    async def test_locks_lease_expires_on_backend_clock(self, backend: Backend) -> None:
        locks = locks_of(backend)
        first = await locks.acquire("res", "a", ttl=0.1)
        assert first is not None
        await self.eventually(lambda: locks.holder("res"), lambda h: h is None, "lease expiry")
        assert await locks.renew("res", "a", ttl=30.0) is False, "an expired lease stays dead"
        assert await locks.release("res", "a") is False
        second = await locks.acquire("res", "b", ttl=30.0)
        assert second is not None
        assert second.fence > first.fence

    async def test_locks_seize_replaces_any_holder(self, backend: Backend) -> None:
        locks = locks_of(backend)
        first = await locks.seize("free", "a", ttl=30.0)
        assert (first.key, first.owner) == ("free", "a")
        seized = await locks.seize("free", "b", ttl=30.0)
        assert seized.owner == "b"
        assert seized.fence > first.fence
        assert await locks.renew("free", "a", ttl=30.0) is False
        assert await locks.release("free", "a") is False
        holder = await locks.holder("free")
        assert holder is not None
        assert (holder.owner, holder.fence) == ("b", seized.fence)

    async def test_locks_fences_strictly_increase(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        one, two = (locks_of(c) for c in await self.clients(open_backend, 2))
        fences: list[int] = []

        def grant(lease: Lease | None) -> None:
            assert lease is not None
            fences.append(lease.fence)

        grant(await one.acquire("res", "a1", ttl=30.0))
        assert await one.release("res", "a1")
        grant(await two.acquire("res", "b1", ttl=0.1))
        await self.eventually(lambda: one.holder("res"), lambda h: h is None, "lease expiry")
        grant(await one.acquire("res", "a2", ttl=30.0))
        grant(await two.seize("res", "b2", ttl=30.0))
        assert await one.renew("res", "a2", ttl=30.0) is False
        assert await two.renew("res", "b2", ttl=30.0) is True
        assert (await two.holder("res")) is not None
        assert await two.release("res", "b2")
        grant(await two.seize("res", "b3", ttl=30.0))
        assert await two.release("res", "b3")
        grant(await one.acquire("res", "a3", ttl=30.0))
        assert fences == sorted(set(fences)), f"fences must strictly increase: {fences}"
        other = await one.acquire("other-key", "x", ttl=30.0)
        assert other is not None, "fences are per key; another key is independent"

    async def test_locks_key_prefix_isolates_leases(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        base = backend.key_prefix
        one = locks_of(await open_backend(key_prefix=base + "one:"))
        two = locks_of(await open_backend(key_prefix=base + "two:"))
        assert await one.acquire("res", "a", ttl=30.0) is not None
        assert await two.acquire("res", "b", ttl=30.0) is not None
        assert await two.release("res", "a") is False
        holder = await one.holder("res")
        assert holder is not None
        assert holder.owner == "a"

    async def test_locks_reject_bad_input(self, backend: Backend) -> None:
        locks = locks_of(backend)
        for ttl in (0, -1.0, math.inf, math.nan):
            with bad_input("ttl", ValueError):
                await locks.acquire("res", "a", ttl=ttl)
            with bad_input("ttl", ValueError):
                await locks.seize("res", "a", ttl=ttl)
            with bad_input("ttl", ValueError):
                await locks.renew("res", "a", ttl=ttl)
        with bad_input("key", ValueError):
            await locks.acquire("", "a", ttl=1.0)
        with bad_input("key", TypeError):
            await locks.holder(None)  # type: ignore[arg-type]
        with bad_input("owner", ValueError):
            await locks.acquire("res", "", ttl=1.0)
        with bad_input("owner", TypeError):
            await locks.seize("res", 1, ttl=1.0)  # type: ignore[arg-type]
        with bad_input("owner", ValueError):
            await locks.renew("res", "", ttl=1.0)
        with bad_input("owner", TypeError):
            await locks.release("res", None)  # type: ignore[arg-type]
        assert await locks.holder("res") is None

    async def test_locks_concurrent_acquire_has_one_winner(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        ports = [locks_of(c) for c in await self.clients(open_backend)]
        last_fence = 0
        for round_ in range(20):
            key = f"res:{round_ % 4}"
            results = await gather(
                port.acquire(key, f"c{i}-r{round_}", ttl=30.0) for i, port in enumerate(ports)
            )
            winners = [lease for lease in results if lease is not None]
            assert len(winners) == 1, f"round {round_}: {len(winners)} contenders hold {key}"
            assert await ports[0].release(key, winners[0].owner)
            if key == "res:0":
                assert winners[0].fence > last_fence
                last_fence = winners[0].fence

    async def test_locks_contenders_never_both_hold(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        ports = [locks_of(c) for c in await self.clients(open_backend, 2)]
        holders: list[str] = []
        fences: list[int] = []
        ids = _runtime.current().ids
        clock = _runtime.current().clock

        async def contender(port: Locks, name: str) -> None:
            for attempt in range(40):
                owner = f"{name}-{attempt}-{ids.hex(2)}"
                lease = await port.acquire("res", owner, ttl=30.0)
                if lease is None:
                    # Clean-up code that runs after a failed attempt must not break exclusion.
                    assert await port.release("res", owner) is False
                    await clock.sleep(0)
                    continue
                assert not holders, f"{owner} acquired while {holders} held the lease"
                holders.append(owner)
                fences.append(lease.fence)
                await clock.sleep(0)
                assert await port.renew("res", owner, ttl=30.0), f"{owner} lost its lease"
                holders.remove(owner)
                assert await port.release("res", owner)

        await gather([contender(ports[0], "a"), contender(ports[1], "b")])
        assert fences, "nobody ever held the lease"
        assert fences == sorted(set(fences))

    # -- session locks ---------------------------------------------------------------
    async def _session_refused(self, backend: Backend) -> bool:
        if Capability.SESSION_LOCKS in backend.capabilities:
            return False
        locks, fake = locks_of(backend), SessionLock("s", 1, "nobody")
        with pytest.raises(UnsupportedBackendError):
            await locks.try_session_lock("s")
        with pytest.raises(UnsupportedBackendError):
            await locks.release_session_lock(fake)
        with pytest.raises(UnsupportedBackendError):
            await locks.session_lock_held(fake)
        return True

    async def test_locks_session_lock_is_exclusive_and_reentrant(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        if await self._session_refused(backend):
            return
        mine, theirs = locks_of(backend), locks_of(await open_backend())
        lock = await mine.try_session_lock("job")
        assert lock is not None
        assert lock.key == "job"
        assert await mine.try_session_lock("job") == lock, "re-entrant for the same session"
        assert await theirs.try_session_lock("job") is None
        assert await mine.session_lock_held(lock)
        assert await theirs.release_session_lock(lock) is False, "only its session releases it"
        assert await mine.session_lock_held(lock)
        assert await mine.release_session_lock(lock) is True
        assert not await mine.session_lock_held(lock)
        taken = await theirs.try_session_lock("job")
        assert taken is not None
        assert taken.fence > lock.fence
        assert taken.session != lock.session

    async def test_locks_session_lock_dies_with_its_session(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        if await self._session_refused(backend):
            return
        doomed = await open_backend()
        lock = await locks_of(doomed).try_session_lock("job")
        assert lock is not None
        survivor = locks_of(backend)
        assert await survivor.try_session_lock("job") is None
        await doomed.close()
        taken = await self.eventually(
            lambda: survivor.try_session_lock("job"),
            lambda got: got is not None,
            "the closed session's lock to be released",
        )
        assert taken is not None
        assert taken.fence > lock.fence
