"""SQL of the SortedLog and Stream ports for one space.

Tables (see :mod:`uwsx_postgres.schema`): entries ``<space>`` keyed ``(log, seq)``, counters
``<space>_seq`` (``seq``, ``low``, entry ``expires_at``, ``epoch``), and for streams
``<space>_dedup`` / ``<space>_prod``.

An append is one statement: the counter upsert locks the log's counter row (concurrent appends
of one log serialise on it and get consecutive seqs), the entry insert uses the new seq, and the
counter's ``low`` moves up past trimmed or expired entries, which are deleted in the same
statement. Reads only return entries with ``low <= seq <= counter`` whose log has not expired,
so they are exact even while the deletion of a concurrent append's victims is still pending.
Seqs are ``bigint`` end to end.
"""

from __future__ import annotations

from dataclasses import dataclass

from uwsx_postgres._driver import quote_ident

__all__ = ["LogSql"]

_IV = "* interval '1 second'"


@dataclass(frozen=True, slots=True)
class LogSql:
    """Statement texts of one space; parameters are documented per statement."""

    append: str
    append_idempotent: str
    lock_counter: str
    read_after: str
    bounds: str
    delete: str
    delete_prefix: str
    sweep: str
    sweep_producers: str

    @classmethod
    def for_space(cls, space: str, *, stream: bool) -> LogSql:
        e, c = quote_ident(space), quote_ident(f"{space}_seq")
        d, p = quote_ident(f"{space}_dedup"), quote_ident(f"{space}_prod")

        def counter_upsert(source: str, guard: str) -> str:
            # $1 log, $4 max_size, $5 ttl
            return f"""
  INSERT INTO {c} AS c (log, seq, low, expires_at) {source}
  ON CONFLICT (log) DO UPDATE SET
    seq = c.seq + 1,
    low = CASE WHEN c.expires_at <= statement_timestamp() THEN c.seq + 1
               ELSE greatest(c.low, c.seq + 2 - $4::bigint) END,
    expires_at = EXCLUDED.expires_at
  {guard}
  RETURNING c.seq, c.low"""

        fresh = f"VALUES ($1::text, 1, 1, statement_timestamp() + $5::float8 {_IV})"
        store = f"""
e AS (
  INSERT INTO {e} AS e (log, seq, event, data) SELECT $1::text, c.seq, $2::text, $3::text FROM c
  ON CONFLICT (log, seq) DO UPDATE
    SET event = EXCLUDED.event, data = EXCLUDED.data, created_at = statement_timestamp()),
gone AS (DELETE FROM {e} x USING c WHERE x.log = $1::text AND x.seq < c.low)"""
        # $1 log, $2 event, $3 data, $4 max_size, $5 ttl -> seq
        append = f"WITH c AS ({counter_upsert(fresh, '')}),{store}\nSELECT c.seq FROM c"
        # + $6 producer, $7 request id, $8 dedup ttl -> (seq of the recorded duplicate, new seq);
        # both NULL when another append changed the counter after this statement's snapshot
        # (the dedup lookup may then be stale): the caller retries holding the counter lock.
        append_idempotent = f"""
WITH cur AS (SELECT c.seq, c.epoch FROM {c} c WHERE c.log = $1::text),
pr AS (SELECT p.gen FROM {p} p WHERE p.log = $1::text AND p.producer = $6::text
       AND (p.expires_at IS NULL OR p.expires_at > statement_timestamp())),
dup AS (SELECT d.seq FROM {d} d JOIN pr ON d.gen = pr.gen
        WHERE d.log = $1::text AND d.producer = $6::text AND d.request_id = $7::text),
c AS ({
            counter_upsert(
                f"SELECT $1::text, 1, 1, statement_timestamp() + $5::float8 {_IV} "
                "WHERE NOT EXISTS (SELECT 1 FROM dup)",
                "WHERE (c.seq, c.epoch) = (SELECT cur.seq, cur.epoch FROM cur)",
            )
        }),{store},
np AS (
  INSERT INTO {p} AS p (log, producer, gen, expires_at)
  SELECT $1::text, $6::text, gen_random_uuid(), statement_timestamp() + $8::float8 {_IV} FROM c
  ON CONFLICT (log, producer) DO UPDATE SET
    gen = CASE WHEN p.expires_at <= statement_timestamp() THEN EXCLUDED.gen ELSE p.gen END,
    expires_at = EXCLUDED.expires_at
  RETURNING p.gen),
rec AS (
  INSERT INTO {d} (log, producer, request_id, seq, gen)
  SELECT $1::text, $6::text, $7::text, c.seq, np.gen FROM c, np
  ON CONFLICT (log, producer, request_id) DO UPDATE SET seq = EXCLUDED.seq, gen = EXCLUDED.gen)
SELECT (SELECT dup.seq FROM dup), (SELECT c.seq FROM c)"""
        # $1 log: inside a transaction, before append_idempotent
        lock_counter = f"SELECT 1 FROM {c} WHERE log = $1::text FOR UPDATE"
        # $1 log, $2 after, $3 limit (NULL: all)
        read_after = f"""
SELECT e.seq, e.event, e.data FROM {c} c JOIN {e} e ON e.log = c.log
WHERE c.log = $1::text AND e.seq > greatest($2::bigint, c.low - 1) AND e.seq <= c.seq
  AND (c.expires_at IS NULL OR c.expires_at > statement_timestamp())
ORDER BY e.seq LIMIT $3::bigint"""
        # $1 log -> (counter, epoch, oldest live seq)
        bounds = f"""
SELECT c.seq, c.epoch::text,
  CASE WHEN c.expires_at IS NULL OR c.expires_at > statement_timestamp() THEN
    (SELECT e.seq FROM {e} e WHERE e.log = c.log AND e.seq >= c.low AND e.seq <= c.seq
     ORDER BY e.seq LIMIT 1) END
FROM {c} c WHERE c.log = $1::text"""
        extra = (
            f", dd AS (DELETE FROM {d} WHERE {{w}}), dp AS (DELETE FROM {p} WHERE {{w}})"
            if stream
            else ""
        )
        one = "log = $1::text"
        many = (
            "log >= $1::text AND ($2::text IS NULL OR log < $2::text) "
            "AND starts_with(log, $1::text)"
        )
        # $1 log -> counters deleted
        delete = (
            f"WITH de AS (DELETE FROM {e} WHERE {one}), dc AS (DELETE FROM {c} WHERE {one} "
            f"RETURNING 1){extra.format(w=one)} SELECT count(*)::int FROM dc"
        )
        # $1 prefix, $2 exclusive upper bound -> counters deleted
        delete_prefix = (
            f"WITH de AS (DELETE FROM {e} WHERE {many}), dc AS (DELETE FROM {c} WHERE {many} "
            f"RETURNING 1){extra.format(w=many)} SELECT count(*)::int FROM dc"
        )
        # $1 batch -> entries deleted: below the counter's low, or written before their log's
        # entries expired. The conditions name the deleted row itself, so they are re-checked
        # on its latest version if an append rewrites it meanwhile.
        dead = (
            "({x}.seq < {k}.low OR ({k}.expires_at <= statement_timestamp() "
            "AND {x}.created_at <= {k}.expires_at))"
        )
        sweep = f"""
WITH x AS (DELETE FROM {e} e USING {c} c WHERE c.log = e.log AND {dead.format(x="e", k="c")}
  AND (e.log, e.seq) IN (
    SELECT e2.log, e2.seq FROM {e} e2 JOIN {c} c2 ON c2.log = e2.log
    WHERE {dead.format(x="e2", k="c2")} LIMIT $1::int)
  RETURNING 1)
SELECT count(*)::int FROM x"""
        # $1 batch -> producers deleted (with their dedup records)
        sweep_producers = f"""
WITH gone AS (DELETE FROM {p} p WHERE (p.log, p.producer) IN (
    SELECT q.log, q.producer FROM {p} q WHERE q.expires_at <= statement_timestamp() LIMIT $1::int)
  AND p.expires_at <= statement_timestamp() RETURNING p.log, p.producer),
recs AS (DELETE FROM {d} r USING gone WHERE r.log = gone.log AND r.producer = gone.producer)
SELECT count(*)::int FROM gone"""
        return cls(
            append=append,
            append_idempotent=append_idempotent,
            lock_counter=lock_counter,
            read_after=read_after,
            bounds=bounds,
            delete=delete,
            delete_prefix=delete_prefix,
            sweep=sweep,
            sweep_producers=sweep_producers,
        )
