"""KV port: strings, counters, maps with per-field deadlines, and token buckets.

Specification
=============

Keys and values are ``str``. Values are opaque to the backend (features store JSON text).
Every key is namespaced by the backend's ``key_prefix``; ``delete_prefix`` never leaves that
namespace. A key names exactly one kind of object (string/counter, map or bucket); using an
operation of another kind on it raises :class:`uwsx.errors.BackendError` (Redis ``WRONGTYPE``).

**Atomicity.** Each method is one atomic step on the backend: no other operation observes it
half-done, and it costs one round trip (adapters may coalesce the calls of one event-loop tick
into one pipeline, which still counts as one round trip per tick).

**Ordering** (every port). An adapter that coalesces one tick's operations sends them on one
connection in issue order, so the server applies them in that order and a read issued after a
write in the same tick observes it. Adapters that run operations on separate pooled connections
(Postgres) give no order between operations in flight at once: callers that need it await the
first.

**Time.** TTLs are float seconds (``None`` = no expiry), measured on the *backend's* clock,
with millisecond resolution. A TTL must be finite and > 0; anything else raises ``ValueError``
before contacting the backend. An expired key or map field is indistinguishable from one that
never existed.

**Co-location.** Keys passed to one operation (``map_put_bounded``'s ``unless_key``) must share
a co-location tag (:func:`uwsx.ports.colocate`) so clustered backends can run it on one shard.

**Errors.** :class:`uwsx.errors.Unavailable` when the operation was not applied;
:class:`uwsx.errors.Indeterminate` when it may have been.

Operations
----------

Strings
  ``get``, ``get_many``, ``set`` (optionally with TTL), ``set_if_absent`` (returns the current
  value when it did not store: the idempotency-slot and lease-acquire step),
  ``compare_and_set`` / ``compare_and_delete`` / ``compare_and_expire`` (act only when the stored
  value equals ``expected``), ``expire``, ``ttl``, ``delete``, ``incr``, ``delete_prefix``.

Maps with per-field deadlines
  A map is a set of ``field -> value`` entries under one key; each field has its own deadline.
  A map with no live fields does not exist. ``map_put`` reports how many *other* live fields
  share a name prefix, and ``map_remove`` how many remain after removing one: together they let
  a feature detect "first holder" and "last holder gone" atomically (presence), with exactly one
  caller seeing "gone" when the last two holders leave concurrently. ``map_put_bounded`` admits
  a new field only while the live count is below a bound (groups' ``max_members``).
  ``map_sweep`` physically removes expired fields (lazy backends) and returns how many.

Token buckets
  ``bucket_take`` implements a fixed-window bucket on the backend clock: a bucket starts full
  (``capacity`` points, window ``interval``); when the window has passed it refills to
  ``capacity``; a take of ``cost`` succeeds when enough points remain; otherwise, if ``block`` >
  0, the key is banned for ``block`` seconds. While banned every take fails. ``bucket_ban`` bans
  explicitly. Buckets expire on their own once idle (window + block + 60 s).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = ["KV", "BoundedPut", "BucketResult", "MapRemoval"]


@dataclass(frozen=True, slots=True)
class MapRemoval:
    """Result of :meth:`KV.map_remove`.

    ``removed``: the field was live and this call removed it.
    ``remaining``: live fields sharing the prefix after the removal.
    The caller that sees ``removed and remaining == 0`` removed the last holder.
    """

    removed: bool
    remaining: int

    @property
    def gone(self) -> bool:
        return self.removed and self.remaining == 0


@dataclass(frozen=True, slots=True)
class BoundedPut:
    """Result of :meth:`KV.map_put_bounded`.

    ``status``: ``"stored"``, ``"full"`` (live count had reached ``max_fields`` and the field
    was new) or ``"closed"`` (``unless_key`` exists). ``items``: the live fields after the
    operation when stored, else empty.
    """

    status: Literal["stored", "full", "closed"]
    items: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class BucketResult:
    """Result of :meth:`KV.bucket_take`: ``reset_in`` seconds until the window refills (or the
    ban ends)."""

    allowed: bool
    remaining: int
    reset_in: float


@runtime_checkable
class KV(Protocol):
    """Strings, counters, deadline maps and token buckets (see the module docstring)."""

    # -- strings ---------------------------------------------------------------
    async def get(self, key: str) -> str | None:
        """The value, or ``None`` when absent or expired."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """Values in the order of ``keys`` (one round trip; keys need not be co-located)."""
        ...

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        """Store ``value``, replacing any value and TTL."""
        ...

    async def set_if_absent(
        self, key: str, value: str, *, ttl: float | None = None
    ) -> tuple[bool, str | None]:
        """Store only if absent. Returns ``(True, None)`` when stored, else ``(False, current)``."""
        ...

    async def compare_and_set(
        self, key: str, expected: str, value: str, *, ttl: float | None = None
    ) -> bool:
        """Replace the value only if the stored value equals ``expected``; the TTL becomes
        ``ttl`` (none when omitted), as with :meth:`set`."""
        ...

    async def compare_and_delete(self, key: str, expected: str) -> bool:
        """Delete only if the stored value equals ``expected``."""
        ...

    async def compare_and_expire(self, key: str, expected: str, ttl: float) -> bool:
        """Reset the TTL only if the stored value equals ``expected``."""
        ...

    async def expire(self, key: str, ttl: float) -> bool:
        """Set the TTL of an existing key of any kind; False when the key does not exist."""
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds until expiry; ``math.inf`` without expiry; ``None`` when the key is absent."""
        ...

    async def delete(self, *keys: str) -> int:
        """Delete keys of any kind (they need not be co-located; no keys: 0); returns how many
        existed. Not atomic across keys on clustered backends."""
        ...

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add ``amount`` to an integer counter (absent = 0) and return the new value. With
        ``ttl`` the key's TTL is reset on every call; without it an existing TTL is kept.

        Counters are signed 64-bit integers stored as canonical decimal text (``0`` or
        ``-?[1-9][0-9]*``): a stored value in any other form (``" 3"``, ``"+4"``, ``"01"``),
        an ``amount`` outside that range, or a result that would overflow raises
        :class:`~uwsx.errors.BackendError` and changes nothing."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key (of any kind) starting with ``prefix``; returns how many. Not
        atomic across keys; keys created concurrently may survive."""
        ...

    # -- maps with per-field deadlines -------------------------------------------
    async def map_put(
        self,
        key: str,
        field: str,
        value: str,
        *,
        ttl: float | None = None,
        prefix: str | None = None,
    ) -> int:
        """Set one field (value and deadline) and return the number of live fields *other than*
        ``field`` whose name starts with ``prefix`` (all fields when ``prefix`` is None),
        counted atomically with the write."""
        ...

    async def map_put_many(
        self, key: str, items: Mapping[str, str], *, ttl: float | None = None
    ) -> None:
        """Set several fields of one map, each with the same deadline."""
        ...

    async def map_get(self, key: str, field: str) -> str | None:
        """One live field's value."""
        ...

    async def map_items(self, key: str) -> dict[str, str]:
        """Every live field."""
        ...

    async def map_count(self, key: str) -> int:
        """The number of live fields."""
        ...

    async def map_remove(self, key: str, field: str, *, prefix: str | None = None) -> MapRemoval:
        """Remove one field and count the live fields starting with ``prefix`` that remain
        (all fields when ``prefix`` is None)."""
        ...

    async def map_sweep(self, key: str) -> int:
        """Physically remove expired fields; returns how many were removed."""
        ...

    async def map_put_bounded(
        self,
        key: str,
        field: str,
        value: str,
        *,
        max_fields: int | None,
        ttl: float | None = None,
        unless_key: str | None = None,
    ) -> BoundedPut:
        """Set ``field`` unless ``unless_key`` exists (``"closed"``) or the field is new and the
        map already holds ``max_fields`` live fields (``"full"``). ``max_fields=None`` means no
        bound. Expired fields are swept as part of the step. Invalid arguments are refused
        first; then ``"closed"`` wins over ``key`` holding another kind (which otherwise raises
        :class:`~uwsx.errors.BackendError`)."""
        ...

    # -- token buckets ---------------------------------------------------------
    async def bucket_take(
        self, key: str, *, capacity: int, interval: float, cost: int = 1, block: float = 0.0
    ) -> BucketResult:
        """Take ``cost`` points from a fixed-window bucket (see the module docstring)."""
        ...

    async def bucket_ban(
        self, key: str, *, duration: float, capacity: int, interval: float
    ) -> None:
        """Ban the bucket for ``duration`` seconds, keeping (or creating) its points."""
        ...
