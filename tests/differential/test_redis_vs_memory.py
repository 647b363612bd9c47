"""Redis (standalone and cluster) against the memory model, one test per port group.

Each test draws op sequences from :mod:`tests.differential.ops` and runs them through
:class:`tests.differential.conftest.Differential`. Redis has no session locks, so the lock
vocabulary leaves them out here. On the cluster every KV key carries one co-location tag
(``map_put_bounded``'s ``unless_key`` must share the key's slot).
"""

from __future__ import annotations

import pytest

from tests.differential import strategies
from tests.differential.conftest import Differential, fuzz
from tests.integration.redis_servers import RedisDeployment

V = strategies.Vocab()
C = strategies.CLUSTER_VOCAB


def test_kv(redis_standalone: RedisDeployment) -> None:
    fuzz(redis_standalone.url, "kv", strategies.kv_ops(V), strategies.kv_snapshot(V), examples=100)


def test_sorted_log(redis_standalone: RedisDeployment) -> None:
    snapshot = strategies.log_snapshot(V, "log")
    fuzz(redis_standalone.url, "log", strategies.log_ops(V, "log"), snapshot, examples=100)


def test_stream(redis_standalone: RedisDeployment) -> None:
    snapshot = strategies.log_snapshot(V, "stream")
    fuzz(redis_standalone.url, "stream", strategies.log_ops(V, "stream"), snapshot, examples=100)


def test_locks(redis_standalone: RedisDeployment) -> None:
    strategy = strategies.lock_ops(V, session_locks=False)
    fuzz(redis_standalone.url, "locks", strategy, strategies.lock_snapshot(V), examples=100)


def test_queue_jobs(redis_standalone: RedisDeployment) -> None:
    fuzz(
        redis_standalone.url,
        "jobs",
        strategies.queue_ops("jobs"),
        strategies.queue_snapshot(),
        examples=300,
    )


def test_queue_tasks(redis_standalone: RedisDeployment) -> None:
    fuzz(
        redis_standalone.url,
        "tasks",
        strategies.queue_ops("tasks"),
        strategies.queue_snapshot(),
        examples=100,
    )


def test_cluster_mixed(redis_cluster: RedisDeployment) -> None:
    """Every port in one sequence on the cluster (cross-slot routing, tags)."""
    strategy = strategies.mixed_ops(C, session_locks=False)
    fuzz(redis_cluster.url, "cluster", strategy, strategies.mixed_snapshot(C), examples=20)


@pytest.mark.parametrize("name", sorted(set(strategies.REGRESSIONS) - {"stale-session-lock"}))
def test_regression(redis_standalone: RedisDeployment, name: str) -> None:
    with Differential(redis_standalone.url, "regression") as diff:
        diff.check(strategies.REGRESSIONS[name])
