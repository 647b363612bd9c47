"""Receive-side ordering of :class:`~uwsx.features.cursor.Cursor`: per-entry versions.

Every broadcast carries a version (a counter of the cursor object that wrote it, so it grows
with every write of an entry and with its ``remove``); it travels in the relay envelope
(``v``) and in the stored value. Live relays of one instance arrive in order (its writer relays
in order and pub/sub keeps one publisher's order), but entries read from storage do not fit in
that order: a backfill or snapshot read applied before a live update was stored can be answered
after that update arrived, and a relay published before the read can arrive after its answer.
:class:`RemoteVersions` remembers the newest version seen of each remote entry, so that

* a relayed ``update``/``bulk`` frame no newer than what was already shown is dropped,
* an entry read from storage older than what was shown (or removed since) is dropped,
* a ``remove`` is always applied and recorded, so no older read resurrects the entry.

Records live for ``horizon`` seconds after their last use: long enough for any read or relay in
flight to arrive, after which storage itself no longer holds older data (entries expire ``ttl``
after their last write). Entries without a version (written by an older release) are taken as
they come, unless a newer record exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from uwsx._runtime.clock import Clock

__all__ = ["RemoteVersions"]


@dataclass(slots=True)
class _Seen:
    version: int
    removed: bool
    at: float


class RemoteVersions:
    """The newest version seen per ``(topic, key)`` of other instances' entries.

    :param clock: monotonic time source for expiring records.
    :param horizon: seconds a record is kept after its last use (> 0).
    """

    def __init__(self, clock: Clock, horizon: float) -> None:
        self._clock = clock
        self._horizon = horizon
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._pruned_at = clock.monotonic()

    def __len__(self) -> int:
        return len(self._seen)

    def live(self, topic: str, key: str, version: int | None) -> bool:
        """A relayed position: True when it is newer than anything shown of ``key``."""
        now = self._tick()
        if version is None:
            return True
        seen = self._seen.get((topic, key))
        if seen is not None and version <= seen.version:
            return False
        self._seen[(topic, key)] = _Seen(version, False, now)
        return True

    def removed(self, topic: str, key: str, version: int | None) -> None:
        """A relayed ``remove``: remembered so no older read brings the entry back."""
        now = self._tick()
        seen = self._seen.get((topic, key))
        newest = max(
            version if version is not None else -1, seen.version if seen is not None else -1
        )
        self._seen[(topic, key)] = _Seen(newest, True, now)

    def read(self, topic: str, key: str, version: int | None, *, shown: bool) -> bool:
        """An entry read from storage: True unless something newer was already shown (or the
        entry was removed since). ``shown``: the entry is about to be published to every local
        subscriber (a backfill), so it is recorded, and a version already shown is dropped as a
        duplicate; a snapshot for one new client keeps it."""
        now = self._tick()
        seen = self._seen.get((topic, key))
        if seen is None:
            if shown and version is not None:
                self._seen[(topic, key)] = _Seen(version, False, now)
            return True
        if version is None or version < seen.version:
            return False
        if version == seen.version and (seen.removed or shown):
            return False
        if shown:
            self._seen[(topic, key)] = _Seen(version, False, now)
        return True

    def _tick(self) -> float:
        now = self._clock.monotonic()
        if now - self._pruned_at >= self._horizon / 2:
            self._pruned_at = now
            cutoff = now - self._horizon
            for k in [k for k, s in self._seen.items() if s.at < cutoff]:
                del self._seen[k]
        return now
