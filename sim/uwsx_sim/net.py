"""The simulated network between one instance and the backend.

Every port call is an RPC over the instance's :class:`Link`: a request leg, an atomic apply at
the backend at arrival time, a reply leg. Server pushes (pub/sub messages, key-expiry events)
travel back over the same link, in order per subscription connection (TCP).

Fault semantics (each knob is per link, drawn from the ``net:<node>`` stream):

* ``drop_request``: the request never arrives, nothing is applied; the client times out after
  ``request_timeout`` and raises :class:`~uwsx.errors.Indeterminate` (it cannot know).
* ``drop_reply``: the request **is** applied, the reply is lost; the client raises
  ``Indeterminate`` after ``request_timeout`` (the ``commit_unknown_result`` case).
* ``duplicate``: the adapter re-sent a request whose reply it never saw; the backend applies it
  twice and the client sees the second reply (redis-py ``retry_on_timeout``).
* ``partition``: requests and replies are blackholed (``Indeterminate`` after the timeout);
  pushes are held as TCP would retransmit them; a partition lasting ``keepalive`` resets the
  connection.
* ``reset``: the connection drops. In-flight requests raise ``Indeterminate`` at once, the
  backend drops the connection's subscriptions and releases its session locks, and the client
  reconnects and resubscribes, reporting the loss window (``on_loss``).
* latency: ``min + Exp(mean)`` per leg, times ``latency_factor``, plus FoundationDB's rare long
  tail. One instance's requests and replies stay in order (one pipelined connection) unless
  ``ordered = 0`` models a connection pool, where they overtake each other; pushes on one
  subscription never do.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from uwsx_sim.clock import Rng

__all__ = ["Link", "LinkParams"]


@dataclass(frozen=True, slots=True)
class LinkParams:
    """Static knobs of a link (a scenario's ``[scenario.link]`` table)."""

    latency_min: float = 0.0002
    latency_mean: float = 0.0008
    long_tail: float = 0.0
    drop_request: float = 0.0
    drop_reply: float = 0.0
    duplicate: float = 0.0
    request_timeout: float = 1.0
    keepalive: float = 3.0
    reconnect_delay: float = 0.2
    #: 1: one pipelined connection (requests and replies in order); 0: a connection pool,
    #: so concurrent requests of one instance may overtake each other
    ordered: float = 1.0

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> LinkParams:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown link settings {sorted(unknown)}; known: {sorted(known)}")
        return replace(cls(), **{k: float(v) for k, v in data.items()})


class Link:
    """The mutable state of one instance's link; nemeses change it."""

    __slots__ = (
        "drop_reply",
        "drop_request",
        "duplicate",
        "latency_factor",
        "params",
        "partition_gen",
        "partitioned",
        "rng",
    )

    def __init__(self, params: LinkParams, rng: Rng) -> None:
        self.params = params
        self.rng = rng
        self.partitioned = False
        #: bumped on every partition so a stale keepalive timer knows it is stale
        self.partition_gen = 0
        self.latency_factor = 1.0
        self.drop_request = params.drop_request
        self.drop_reply = params.drop_reply
        self.duplicate = params.duplicate

    def delay(self) -> float:
        p = self.params
        d = p.latency_min + self.rng.expovariate(p.latency_mean)
        if p.long_tail > 0 and self.rng.random() < 0.25:
            d += self.rng.long_tail(p.long_tail)
        return d * self.latency_factor

    def request_lost(self) -> bool:
        return self.partitioned or self.rng.chance(self.drop_request)

    def reply_lost(self) -> bool:
        return self.partitioned or self.rng.chance(self.drop_reply)

    def heal(self) -> None:
        """Back to the scenario's static knobs."""
        self.partitioned = False
        self.latency_factor = 1.0
        self.drop_request = self.params.drop_request
        self.drop_reply = self.params.drop_reply
        self.duplicate = self.params.duplicate
