"""PubSub contract, key-expiry events (capability ``key_expiry_events``)."""

from __future__ import annotations

import pytest

from uwsx.errors import UnsupportedBackendError
from uwsx.ports.backend import Backend, Capability
from uwsx.ports.checks import colocate
from uwsx.ports.kv import KV
from uwsx.testing.contract._base import BackendOpener, ContractBase, Inbox, kv_of, pubsub_of

__all__ = ["PubSubExpiryContract"]


async def _expire_barrier(kv: KV, inbox: Inbox, key: str) -> None:
    """Let ``key`` expire and wait for its event: events published before it are in."""
    await kv.set(key, "barrier", ttl=0.05)
    await inbox.wait_until(lambda: key in inbox.keys, f"the expiry event of {key!r}")


class PubSubExpiryContract(ContractBase):
    """``PubSub.subscribe_expired``: whole KV keys under a prefix, reported once expired."""

    async def _expiry_refused(self, backend: Backend) -> bool:
        if Capability.KEY_EXPIRY_EVENTS in backend.capabilities:
            return False
        with pytest.raises(UnsupportedBackendError):
            await pubsub_of(backend).subscribe_expired("k:", self.inbox().expired)
        return True

    async def test_pubsub_expiry_events_report_expired_keys(self, backend: Backend) -> None:
        if await self._expiry_refused(backend):
            return
        ps, kv, inbox = pubsub_of(backend), kv_of(backend), self.inbox()
        await ps.subscribe_expired("sess:", inbox.expired)
        await kv.set("sess:a", "v", ttl=0.1)
        await kv.incr("sess:b", ttl=0.1)
        await kv.map_put("sess:c", "f", "v")
        await kv.expire("sess:c", 0.1)
        wanted = {"sess:a", "sess:b", "sess:c"}
        await inbox.wait_until(lambda: wanted <= set(inbox.keys), f"expiry of {sorted(wanted)}")
        assert sorted(inbox.keys) == sorted(wanted), "each expiry is reported once"

    async def test_pubsub_expiry_events_only_for_whole_keys_under_prefix(
        self, backend: Backend
    ) -> None:
        if await self._expiry_refused(backend):
            return
        ps, kv, inbox = pubsub_of(backend), kv_of(backend), self.inbox()
        # One co-location tag keeps every key on one shard, so the barrier orders all events.
        tag = colocate(self.unique("t"))
        inside = f"{tag}in:"
        await ps.subscribe_expired(inside, inbox.expired)
        await kv.set(f"{tag}out:k", "v", ttl=0.05)
        await kv.map_put(inside + "map", "stay", "v")
        await kv.map_put(inside + "map", "go", "v", ttl=0.05)
        await kv.set(inside + "deleted", "v", ttl=60.0)
        await kv.delete(inside + "deleted")
        await self.eventually(lambda: kv.get(f"{tag}out:k"), lambda v: v is None, "'out' expiry")
        await self.eventually(lambda: kv.map_count(inside + "map"), lambda n: n == 1, "field")
        await _expire_barrier(kv, inbox, inside + "barrier")
        assert inbox.keys == [inside + "barrier"], "only whole keys under the prefix count"

    async def test_pubsub_expiry_events_stay_in_namespace(
        self, backend: Backend, open_backend: BackendOpener
    ) -> None:
        if await self._expiry_refused(backend):
            return
        base = backend.key_prefix
        mine = await open_backend(key_prefix=base + "a:")
        theirs = await open_backend(key_prefix=base + "b:")
        inbox = self.inbox()
        await pubsub_of(mine).subscribe_expired("k:", inbox.expired)
        await kv_of(theirs).set("k:1", "v", ttl=0.05)
        await self.eventually(lambda: kv_of(theirs).get("k:1"), lambda v: v is None, "expiry")
        await _expire_barrier(kv_of(mine), inbox, "k:barrier")
        assert inbox.keys == ["k:barrier"]

    async def test_pubsub_expiry_subscription_close_stops_events(self, backend: Backend) -> None:
        if await self._expiry_refused(backend):
            return
        ps, kv = pubsub_of(backend), kv_of(backend)
        closed, kept = self.inbox(), self.inbox()
        sub = await ps.subscribe_expired("k:", closed.expired)
        await ps.subscribe_expired("k:", kept.expired)
        await sub.close()
        await sub.close()
        await _expire_barrier(kv, kept, "k:1")
        assert closed.keys == []
