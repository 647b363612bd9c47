"""SQL of the Queue port for one space: jobs in ``<space>``, tasks in ``<space>_tasks``.

Rows carry ``ns`` (the backend's ``key_prefix``) so clients with different prefixes never see
each other's jobs or tasks. Claims are one statement each: a CTE picks rows ``FOR UPDATE SKIP
LOCKED`` (concurrent claimers skip each other's rows instead of waiting) and the UPDATE rotates
the claim token or the task fence with ``gen_random_uuid()``. ``complete``, ``fail`` and
``extend`` match ``(id, token)``, so a worker whose claim was taken over cannot touch the job.
"""

from __future__ import annotations

from dataclasses import dataclass

from uwsx_postgres._driver import quote_ident

__all__ = ["QueueSql"]

_IV = "* interval '1 second'"
_EPOCH = "extract(epoch FROM {})::float8"
TASK_COLUMNS = (
    "t.id, t.name, t.input, t.idempotency_key, t.request_id, t.status, t.result, t.error, "
    "t.attempts, "
    + ", ".join(_EPOCH.format(f"t.{c}") for c in ("fence_expires_at", "created_at", "updated_at"))
)
_CLAIMED = "t.id, t.name, t.input, t.idempotency_key, t.request_id, t.fence, t.attempts"


@dataclass(frozen=True, slots=True)
class QueueSql:
    enqueue: str
    claim: str
    complete: str
    fail: str
    extend: str
    pending: str
    clear: str
    task_insert: str
    task_rearm: str
    task_heartbeat: str
    task_commit: str
    task_fail: str
    task_read: str
    task_list: str
    task_counts: str
    task_expire_fence: str
    task_claim_pending: str
    task_reclaim_expired: str
    task_cleanup: str

    @classmethod
    def for_space(cls, space: str) -> QueueSql:
        j, t = quote_ident(space), quote_ident(f"{space}_tasks")
        pairs = "unnest($2::bigint[], $3::text[]) AS c(id, token)"
        match = (
            "j.ns = $1::text AND j.id = c.id AND j.token = c.token AND j.claimed_until IS NOT NULL"
        )
        running = "t.ns = $1::text AND t.id = $2::text AND t.status = 'running'"

        def claim_tasks(where: str, order: str) -> str:
            # $1 ns, $2 limit, $3 fence ttl -> claimed rows with their sort key
            return f"""
WITH c AS (SELECT t.ns, t.id, {order} AS o FROM {t} t WHERE t.ns = $1::text AND {where}
           ORDER BY {order} LIMIT $2::int FOR UPDATE SKIP LOCKED)
UPDATE {t} t SET status = 'running', fence = gen_random_uuid()::text,
  fence_expires_at = now() + $3::float8 {_IV}, attempts = t.attempts + 1, updated_at = now()
FROM c WHERE t.ns = c.ns AND t.id = c.id
RETURNING {_CLAIMED}, c.o"""

        return cls(
            # $1 ns, $2 queue, $3 payload, $4 request id -> id
            enqueue=(
                f"INSERT INTO {j} (ns, queue, payload, request_id) "
                "VALUES ($1::text, $2::text, $3::text, $4::text) RETURNING id"
            ),
            # $1 ns, $2 queue, $3 limit, $4 visibility
            claim=f"""
WITH c AS (SELECT j.id FROM {j} j WHERE j.ns = $1::text AND j.queue = $2::text
           AND (j.claimed_until IS NULL OR j.claimed_until < now())
           ORDER BY j.id LIMIT $3::int FOR UPDATE SKIP LOCKED)
UPDATE {j} j SET claimed_until = now() + $4::float8 {_IV}, attempts = j.attempts + 1,
  token = gen_random_uuid()::text
FROM c WHERE j.id = c.id
RETURNING j.id, j.queue, j.payload, j.request_id, j.attempts,
  {_EPOCH.format("j.created_at")}, j.token""",
            # $1 ns, $2 ids, $3 tokens (, $4 seconds for extend)
            complete=f"DELETE FROM {j} j USING {pairs} WHERE {match} RETURNING j.id",
            fail=(
                f"UPDATE {j} j SET claimed_until = NULL, token = NULL FROM {pairs} "
                f"WHERE {match} RETURNING j.id"
            ),
            extend=(
                f"UPDATE {j} j SET claimed_until = j.claimed_until + $4::float8 {_IV} "
                f"FROM {pairs} WHERE {match} RETURNING j.id"
            ),
            # $1 ns, $2 queue (NULL: all)
            pending=(
                f"SELECT count(*)::int FROM {j} WHERE ns = $1::text "
                "AND ($2::text IS NULL OR queue = $2::text) AND claimed_until IS NULL"
            ),
            clear=(
                f"WITH d AS (DELETE FROM {j} WHERE ns = $1::text "
                "AND ($2::text IS NULL OR queue = $2::text) "
                "RETURNING 1) SELECT count(*)::int FROM d"
            ),
            # $1 ns, $2 id, $3 name, $4 input, $5 key, $6 request id, $7 running?, $8 fence, $9 ttl
            task_insert=f"""
INSERT INTO {t} (ns, id, name, input, idempotency_key, request_id, status, fence,
                 fence_expires_at, attempts)
VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text,
        CASE WHEN $7::bool THEN 'running' ELSE 'pending' END, $8::text,
        CASE WHEN $7::bool THEN now() + $9::float8 {_IV} ELSE now() END,
        CASE WHEN $7::bool THEN 1 ELSE 0 END)""",
            # $1 ns, $2 id, $3 fence, $4 attempt, $5 ttl
            task_rearm=f"""
UPDATE {t} t SET fence = $3::text, attempts = $4::int, fence_expires_at = now() + $5::float8 {_IV},
  updated_at = now() WHERE {running} RETURNING 1""",
            # $1 ns, $2 id, $3 fence, $4 ttl
            task_heartbeat=f"""
UPDATE {t} t SET fence_expires_at = now() + $4::float8 {_IV}, updated_at = now()
WHERE {running} AND t.fence = $3::text AND t.fence_expires_at >= now() RETURNING 1""",
            # $1 ns, $2 id, $3 fence, $4 result / error
            task_commit=f"""
UPDATE {t} t SET status = 'committed', result = $4::text, updated_at = now()
WHERE {running} AND t.fence = $3::text RETURNING 1""",
            task_fail=f"""
UPDATE {t} t SET status = 'failed', error = $4::text, updated_at = now()
WHERE {running} AND t.fence = $3::text RETURNING 1""",
            # $1 ns, $2 id
            task_read=f"SELECT {TASK_COLUMNS} FROM {t} t WHERE t.ns = $1::text AND t.id = $2::text",
            # $1 ns, $2 name, $3 status, $4 limit, $5 offset
            task_list=f"""
SELECT {TASK_COLUMNS} FROM {t} t WHERE t.ns = $1::text
  AND ($2::text IS NULL OR t.name = $2::text) AND ($3::text IS NULL OR t.status = $3::text)
ORDER BY t.ord DESC LIMIT $4::bigint OFFSET $5::bigint""",
            # $1 ns, $2 name
            task_counts=(
                f"SELECT t.status, count(*)::int FROM {t} t WHERE t.ns = $1::text "
                "AND ($2::text IS NULL OR t.name = $2::text) GROUP BY t.status"
            ),
            # $1 ns, $2 id -> the fence
            task_expire_fence=f"""
UPDATE {t} t SET fence_expires_at = now() - interval '1 second', updated_at = now()
WHERE {running} RETURNING t.fence""",
            task_claim_pending=claim_tasks("t.status = 'pending'", "t.ord"),
            task_reclaim_expired=claim_tasks(
                "t.status = 'running' AND t.fence_expires_at < now()",
                "t.fence_expires_at",
            ),
            # $1 ns, $2 older than (seconds)
            task_cleanup=f"""
WITH d AS (DELETE FROM {t} t WHERE t.ns = $1::text AND t.status IN ('committed', 'failed')
           AND t.updated_at < now() - $2::float8 {_IV} RETURNING 1)
SELECT count(*)::int FROM d""",
        )
