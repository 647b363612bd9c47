"""What the connected server can do, read from the server itself (never guessed).

Valkey reports ``redis_version:7.2.4`` for compatibility; its own version is
``valkey_version`` (with ``server_name:valkey``), so every version rule below looks at the
flavour first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from uwsx.ports.backend import Capability

__all__ = ["ServerFacts", "capabilities", "parse_info", "parse_version"]


def parse_info(text: str) -> dict[str, str]:
    """``INFO`` output as a dict (section headers and blank lines skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def parse_version(text: str) -> tuple[int, int, int]:
    """``"7.0.15"`` -> ``(7, 0, 15)``; missing parts are 0, junk is ``ValueError``."""
    parts = [int(p) for p in text.split(".")[:3] if p.strip()]
    if not parts:
        raise ValueError(f"unparseable server version {text!r}")
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """Facts about the server (the first primary's, and the fewest replicas of any primary)."""

    flavor: str
    version: tuple[int, int, int]
    mode: str
    primaries: int
    min_replicas: int
    keyspace_events: str | None

    @classmethod
    def from_info(
        cls,
        server: Mapping[str, str],
        replication: Sequence[Mapping[str, str]],
        *,
        cluster: bool,
        keyspace_events: str | None,
    ) -> ServerFacts:
        flavor = "valkey" if server.get("server_name", "").lower() == "valkey" else "redis"
        raw = server.get("valkey_version") if flavor == "valkey" else None
        version = parse_version(raw or server.get("redis_version", "0"))
        replicas = [int(r.get("connected_slaves", "0") or 0) for r in replication] or [0]
        return cls(
            flavor=flavor,
            version=version,
            mode="cluster" if cluster else "standalone",
            primaries=max(1, len(replication)),
            min_replicas=min(replicas),
            keyspace_events=keyspace_events,
        )

    def at_least(self, redis: tuple[int, int], valkey: tuple[int, int]) -> bool:
        need = valkey if self.flavor == "valkey" else redis
        return self.version[:2] >= need

    @property
    def field_ttl(self) -> bool:
        """Per-field hash expiry (HPEXPIREAT): Redis 7.4+, Valkey 9.0+."""
        return self.at_least(redis=(7, 4), valkey=(9, 0))

    @property
    def expiry_events(self) -> bool:
        """``notify-keyspace-events`` publishes keyevent notifications for ``expired``."""
        flags = self.keyspace_events or ""
        return "E" in flags and ("x" in flags or "A" in flags)

    @property
    def version_text(self) -> str:
        return ".".join(str(p) for p in self.version)


def capabilities(facts: ServerFacts, *, replica_wait: bool | None = None) -> frozenset[Capability]:
    """Capabilities the server offers. ``replica_wait`` overrides the replica count check
    (``True``: replicas may attach later; ``False``: never offer it)."""
    caps = {Capability.DURABLE}
    if facts.at_least(redis=(7, 0), valkey=(7, 0)):
        caps |= {Capability.SHARDED_PUBSUB, Capability.SERVER_FUNCTIONS}
    if facts.expiry_events:
        caps.add(Capability.KEY_EXPIRY_EVENTS)
    if replica_wait if replica_wait is not None else facts.min_replicas >= 1:
        caps.add(Capability.REPLICA_WAIT)
    return frozenset(caps)
