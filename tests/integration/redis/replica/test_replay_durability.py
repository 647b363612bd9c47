"""ReplayBuffer(durability="replicated") against a real primary with one replica: acknowledged
with ``min_replicas=1``; with ``min_replicas=2`` a ReplicationTimeoutError after the message was
stored (it is replayable, it was not broadcast)."""

from __future__ import annotations

from typing import Literal

import pytest

from tests.integration.redis.support import Opener
from tests.integration.redis_servers import RedisDeployment
from uwsx import ReplayBuffer, ReplicationTimeoutError
from uwsx.metrics import Metrics
from uwsx.testing import MockPlatform


@pytest.mark.parametrize("storage", ["sortedset", "stream"])
async def test_acked_by_one_replica(
    redis_replica: RedisDeployment, open_redis: Opener, storage: Literal["sortedset", "stream"]
) -> None:
    metrics = Metrics()
    buf = ReplayBuffer(
        await open_redis(redis_replica.url),
        storage=storage,
        durability="replicated",
        min_replicas=1,
        replication_timeout=5.0,
        metrics=metrics,
    )
    p = MockPlatform()
    assert await buf.publish(p, "durable", "e", {"n": 1}) == 1
    assert len(p.published) == 1
    assert "replay_replications_total 1.0" in metrics.serialize()


async def test_two_replicas_required_times_out_but_keeps_the_message(
    redis_replica: RedisDeployment, open_redis: Opener
) -> None:
    metrics = Metrics()
    buf = ReplayBuffer(
        await open_redis(redis_replica.url),
        durability="replicated",
        min_replicas=2,
        replication_timeout=0.2,
        metrics=metrics,
    )
    p = MockPlatform()
    with pytest.raises(ReplicationTimeoutError) as err:
        await buf.publish(p, "needs-two", "e", {"n": 1})
    assert (err.value.ack, err.value.min_replicas, err.value.timeout) == (1, 2, 0.2)
    assert p.published == []  # not broadcast...
    assert await buf.seq("needs-two") == 1  # ...but stored
    assert len(await buf.since("needs-two", 0)) == 1
    assert "replay_replication_timeouts_total 1.0" in metrics.serialize()


async def test_idempotent_duplicate_does_not_wait(
    redis_replica: RedisDeployment, open_redis: Opener
) -> None:
    buf = ReplayBuffer(
        await open_redis(redis_replica.url),
        storage="stream",
        durability="replicated",
        min_replicas=1,
        replication_timeout=5.0,
    )
    p = MockPlatform()
    first = await buf.publish_idempotent(p, "idem", "e", 1, producer_id="p", request_id="r")
    again = await buf.publish_idempotent(p, "idem", "e", 1, producer_id="p", request_id="r")
    assert (first.is_duplicate, again.is_duplicate, again.seq) == (False, True, first.seq)
    assert len(p.published) == 1
