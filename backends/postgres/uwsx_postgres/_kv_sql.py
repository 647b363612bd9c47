"""SQL of the KV port: one row per key in ``uwsx_kv``.

Row layout: ``kind`` is ``s`` (string/counter), ``m`` (map) or ``b`` (bucket). A map keeps its
fields in ``fields`` as ``{field: [value, deadline_ms | null]}`` and ``gone_at``, the moment its
last field dies (``-infinity`` when it has none). A row is *live* while neither ``expires_at``
(the key's TTL) nor ``gone_at`` has passed; a dead row is the same as no row, and the sweeper
deletes it later.

Why one row per key: every operation is then one statement on one row. ``INSERT ... ON CONFLICT
DO UPDATE`` and ``UPDATE`` lock that row and compute the new value from its latest committed
version, so concurrent writers of a key serialise and never work from a stale snapshot (which a
separate table of map fields, read by a second statement, could not guarantee). Statements that
must report something about the replaced row write it to the scratch column ``aux`` and return
it.

Time is ``statement_timestamp()``: the database clock when the statement arrived, the same for
every expression of a statement, and current for each statement of ``map_put_bounded``'s
transaction (``now()`` would be the transaction's start).
"""

from __future__ import annotations

from uwsx_postgres._driver import quote_ident
from uwsx_postgres.schema import KV_TABLE

__all__ = ["KvSql"]

T = quote_ident(KV_TABLE)

#: Wall clock of the statement in milliseconds (float), for map field deadlines.
NOW_MS = "(extract(epoch FROM statement_timestamp()) * 1000)::float8"


def live(a: str) -> str:
    return (
        f"(({a}.expires_at IS NULL OR {a}.expires_at > statement_timestamp()) AND "
        f"({a}.gone_at IS NULL OR {a}.gone_at > statement_timestamp()))"
    )


def expiry(param: str) -> str:
    """``statement_timestamp() + ttl`` (NULL when the ttl parameter is NULL)."""
    return f"(statement_timestamp() + {param}::float8 * interval '1 second')"


def deadline_ms(param: str) -> str:
    return (
        f"(CASE WHEN {param}::float8 IS NULL THEN NULL "
        f"ELSE ({NOW_MS} + {param}::float8 * 1000)::bigint END)"
    )


def field_live(entry: str) -> str:
    return f"(({entry} ->> 1) IS NULL OR ({entry} ->> 1)::float8 > {NOW_MS})"


def live_fields(expr: str) -> str:
    return (
        f"(SELECT coalesce(jsonb_object_agg(e.key, e.value), '{{}}'::jsonb) "
        f"FROM jsonb_each({expr}) e WHERE {field_live('e.value')})"
    )


def gone_of(expr: str) -> str:
    """When the last field of ``expr`` dies: -infinity for none, NULL if one never does."""
    return (
        "(SELECT CASE WHEN count(*) = 0 THEN '-infinity'::timestamptz "
        "WHEN bool_or((e.value ->> 1) IS NULL) THEN NULL "
        "ELSE to_timestamp(max((e.value ->> 1)::float8) / 1000) END "
        f"FROM jsonb_each({expr}) e)"
    )


def count_prefix(expr: str, prefix: str, *, exclude: str | None = None) -> str:
    skip = f"k <> {exclude}::text AND " if exclude else ""
    return (
        f"(SELECT count(*) FROM jsonb_object_keys({expr}) k "
        f"WHERE {skip}({prefix}::text IS NULL OR starts_with(k, {prefix}::text)))::int"
    )


_L = live("t")
# A stored counter must be canonical decimal (what Redis INCRBY accepts): bigint input alone
# would also take ' 7', '+7', '07' and '-0'. Anything else is cast as-is and fails (22P02).
_CANONICAL_INT = (
    "(CASE WHEN t.value ~ '^(0|-?[1-9][0-9]*)$' THEN t.value ELSE 'x' || t.value END)::bigint"
)
# Columns a write of another kind resets.
_CLEAR = (
    "value = NULL, fields = NULL, gone_at = NULL, points = NULL, reset_at = NULL, "
    "banned_until = NULL"
)
_OLD_FIELDS = (
    f"(CASE WHEN {_L} AND t.kind = 'm' THEN {live_fields('t.fields')} ELSE '{{}}'::jsonb END)"
)
_OLD_EXPIRY = f"(CASE WHEN {_L} THEN t.expires_at END)"
_MAP_COLUMNS = "(kind, value, fields, expires_at, gone_at, points, reset_at, banned_until, aux)"


def _map_upsert(new: str, aux: str) -> str:
    """Merge the fields ``new`` into the live fields of map ``$1`` (creating it); ``aux``
    computed from the old live fields ``o.f``. No row is returned for a live key of another
    kind."""
    return f"""
INSERT INTO {T} AS t (key, kind, fields, gone_at)
SELECT $1::text, 'm', n.f, {gone_of("n.f")} FROM (SELECT {new} AS f) n
ON CONFLICT (key) DO UPDATE SET {_MAP_COLUMNS} = (
    SELECT 'm', NULL::text, n.f, o.exp, {gone_of("n.f")}, NULL::bigint, NULL::timestamptz,
           NULL::timestamptz, {aux}
    FROM (SELECT {_OLD_FIELDS} AS f, {_OLD_EXPIRY} AS exp) o,
         LATERAL (SELECT o.f || {new} AS f) n)
WHERE t.kind = 'm' OR NOT {_L}
RETURNING t.aux"""


_NEW_FIELD = "jsonb_build_object($2::text, jsonb_build_array($3::text, " + deadline_ms("$4") + "))"
_NEW_FIELDS = (
    "(SELECT jsonb_object_agg(x.f, jsonb_build_array(x.v, "
    + deadline_ms("$4")
    + ")) FROM unnest($2::text[], $3::text[]) AS x(f, v))"
)


def _bucket_step(s0: str) -> str:
    """New bucket state from the old one (columns p0, r0, b0, exp0 of ``s0``): outcome 0 banned,
    1 allowed, 2 denied and banned now, 3 denied. $2 capacity, $3 interval, $4 cost, $5 block."""
    return f"""
SELECT y.outcome,
  CASE y.outcome WHEN 0 THEN {s0}.p0 WHEN 1 THEN y.pr - $4::bigint ELSE y.pr END AS points,
  CASE WHEN y.outcome = 0 THEN {s0}.r0 ELSE y.rr END AS reset_at,
  CASE WHEN y.outcome = 2 THEN {expiry("$5")} ELSE {s0}.b0 END AS banned_until,
  CASE y.outcome WHEN 0 THEN {s0}.exp0
    WHEN 1 THEN statement_timestamp() + ($3::float8 + $5::float8 + 60) * interval '1 second'
    WHEN 2 THEN statement_timestamp() + ($5::float8 + 60) * interval '1 second'
    ELSE statement_timestamp() + ($3::float8 + 60) * interval '1 second' END AS expires_at
FROM (SELECT x.pr, x.rr,
        CASE WHEN {s0}.b0 > statement_timestamp() THEN 0 WHEN x.pr >= $4::bigint THEN 1
             WHEN $5::float8 > 0 THEN 2 ELSE 3 END AS outcome
      FROM (SELECT CASE WHEN {s0}.r0 <= statement_timestamp() THEN $2::bigint
                        ELSE {s0}.p0 END AS pr,
                   CASE WHEN {s0}.r0 <= statement_timestamp() THEN {expiry("$3")}
                        ELSE {s0}.r0 END AS rr) x) y"""


_FRESH_BUCKET = (
    f"(SELECT $2::bigint AS p0, {expiry('$3')} AS r0, "
    "'-infinity'::timestamptz AS b0, NULL::timestamptz AS exp0)"
)
_OLD_BUCKET = (
    f"(SELECT CASE WHEN {_L} THEN t.points ELSE $2::bigint END AS p0, "
    f"CASE WHEN {_L} THEN t.reset_at ELSE {expiry('$3')} END AS r0, "
    f"CASE WHEN {_L} THEN t.banned_until ELSE '-infinity'::timestamptz END AS b0, "
    f"{_OLD_EXPIRY} AS exp0)"
)


class KvSql:
    """Statement texts; parameters are documented per statement."""

    get = f"SELECT t.kind, t.value FROM {T} t WHERE t.key = $1::text AND {_L}"
    # $1 keys
    get_many = (
        f"SELECT t.kind, t.value FROM unnest($1::text[]) WITH ORDINALITY AS k(key, i) "
        f"LEFT JOIN {T} t ON t.key = k.key AND {_L} ORDER BY k.i"
    )
    # $1 key, $2 value, $3 ttl
    set = f"""
INSERT INTO {T} AS t (key, kind, value, expires_at) VALUES ($1::text, 's', $2::text, {expiry("$3")})
ON CONFLICT (key) DO UPDATE SET kind = 's',
  {_CLEAR.replace("value = NULL", "value = EXCLUDED.value")},
  expires_at = EXCLUDED.expires_at"""
    set_if_absent = f"""
INSERT INTO {T} AS t (key, kind, value, expires_at) VALUES ($1::text, 's', $2::text, {expiry("$3")})
ON CONFLICT (key) DO UPDATE SET
  kind = CASE WHEN {_L} THEN t.kind ELSE 's' END,
  value = CASE WHEN {_L} THEN t.value ELSE EXCLUDED.value END,
  fields = CASE WHEN {_L} THEN t.fields END,
  expires_at = CASE WHEN {_L} THEN t.expires_at ELSE EXCLUDED.expires_at END,
  gone_at = CASE WHEN {_L} THEN t.gone_at END,
  points = CASE WHEN {_L} THEN t.points END,
  reset_at = CASE WHEN {_L} THEN t.reset_at END,
  banned_until = CASE WHEN {_L} THEN t.banned_until END,
  aux = CASE WHEN {_L} THEN 1 ELSE 0 END
RETURNING t.aux, t.kind, t.value"""
    _kind = f"(SELECT t.kind FROM {T} t WHERE t.key = $1::text AND {_L})"
    # $1 key, $2 expected, $3 value, $4 ttl -> (changed, kind of the live key)
    compare_and_set = f"""
WITH u AS (UPDATE {T} t SET value = $3::text, expires_at = {expiry("$4")}
           WHERE t.key = $1::text AND t.kind = 's' AND t.value = $2::text AND {_L} RETURNING 1)
SELECT (SELECT count(*) FROM u)::int, {_kind}"""
    # $1 key, $2 expected
    compare_and_delete = f"""
WITH u AS (DELETE FROM {T} t WHERE t.key = $1::text AND t.kind = 's' AND t.value = $2::text
           AND {_L} RETURNING 1)
SELECT (SELECT count(*) FROM u)::int, {_kind}"""
    # $1 key, $2 expected, $3 ttl
    compare_and_expire = f"""
WITH u AS (UPDATE {T} t SET expires_at = {expiry("$3")}
           WHERE t.key = $1::text AND t.kind = 's' AND t.value = $2::text AND {_L} RETURNING 1)
SELECT (SELECT count(*) FROM u)::int, {_kind}"""
    # $1 key, $2 ttl
    expire = (
        f"UPDATE {T} t SET expires_at = {expiry('$2')} WHERE t.key = $1::text AND {_L} RETURNING 1"
    )
    ttl = (
        f"SELECT extract(epoch FROM t.expires_at - statement_timestamp())::float8 FROM {T} t "
        f"WHERE t.key = $1::text AND {_L}"
    )
    # $1 keys -> one row per deleted row: was it live
    delete = f"DELETE FROM {T} t WHERE t.key = ANY($1::text[]) RETURNING {_L}"
    # $1 key, $2 amount, $3 ttl
    incr = f"""
INSERT INTO {T} AS t (key, kind, value, expires_at) VALUES ($1::text, 's', $2::bigint::text, {
        expiry("$3")
    })
ON CONFLICT (key) DO UPDATE SET kind = 's', {
        _CLEAR.replace(
            "value = NULL",
            f"value = ((CASE WHEN {_L} THEN {_CANONICAL_INT} ELSE 0 END) + $2::bigint)::text",
        )
    },
  expires_at = CASE WHEN $3::float8 IS NOT NULL THEN EXCLUDED.expires_at WHEN {
        _L
    } THEN t.expires_at END
WHERE t.kind = 's' OR NOT {_L}
RETURNING t.value"""
    # $1 prefix, $2 exclusive upper bound (NULL: none)
    delete_prefix = f"""
DELETE FROM {T} t WHERE t.key >= $1::text AND ($2::text IS NULL OR t.key < $2::text)
  AND starts_with(t.key, $1::text) RETURNING {_L}"""
    # $1 key, $2 field, $3 value, $4 ttl, $5 prefix -> other live fields with the prefix
    map_put = _map_upsert(_NEW_FIELD, count_prefix("o.f", "$5", exclude="$2"))
    # $1 key, $2 fields, $3 values, $4 ttl
    map_put_many = _map_upsert(_NEW_FIELDS, "0")
    # $1 key, $2 field
    map_get = (
        f"SELECT t.kind, CASE WHEN {field_live('(t.fields -> $2::text)')} "
        f"THEN (t.fields -> $2::text) ->> 0 END FROM {T} t WHERE t.key = $1::text AND {_L}"
    )
    map_items = (
        f"SELECT t.kind, {live_fields('t.fields')}::text FROM {T} t WHERE t.key = $1::text AND {_L}"
    )
    map_count = (
        "SELECT t.kind, (SELECT count(*) FROM jsonb_each(t.fields) e "
        f"WHERE {field_live('e.value')})::int "
        f"FROM {T} t WHERE t.key = $1::text AND {_L}"
    )
    # $1 key, $2 field, $3 prefix -> (removed, remaining, kind of the live key)
    map_remove = f"""
WITH u AS (
  UPDATE {T} t SET (fields, gone_at, aux) = (
      SELECT n.f, {gone_of("n.f")}, CASE WHEN (o.f -> $2::text) IS NULL THEN 0 ELSE 1 END
      FROM (SELECT {live_fields("t.fields")} AS f) o, LATERAL (SELECT o.f - $2::text AS f) n)
  WHERE t.key = $1::text AND t.kind = 'm' AND {_L}
  RETURNING t.aux, {count_prefix("t.fields", "$3")} AS remaining)
SELECT (SELECT aux FROM u), (SELECT remaining FROM u), {_kind}"""
    # $1 key -> (expired fields removed, kind of the live key)
    map_sweep = f"""
WITH u AS (
  UPDATE {T} t SET (fields, gone_at, aux) = (
      SELECT n.f, {gone_of("n.f")},
             ((SELECT count(*) FROM jsonb_object_keys(t.fields))
              - (SELECT count(*) FROM jsonb_object_keys(n.f)))::int
      FROM (SELECT {live_fields("t.fields")} AS f) n)
  WHERE t.key = $1::text AND t.kind = 'm'
  RETURNING t.aux)
SELECT (SELECT aux FROM u), {_kind}"""
    # $1 key: lock the row (creating a dead placeholder map) -> (kind, live)
    map_lock = f"""
INSERT INTO {T} AS t (key, kind, fields, gone_at) VALUES ($1::text, 'm', '{{}}'::jsonb, '-infinity')
ON CONFLICT (key) DO UPDATE SET aux = t.aux RETURNING t.kind, {_L}"""
    # after map_lock: $1 key, $2 field, $3 value, $4 ttl, $5 max_fields, $6 unless_key
    # -> (closed, live fields after storing as JSON text, or NULL when full)
    map_put_bounded = f"""
WITH closed AS (SELECT 1 FROM {T} c WHERE c.key = $6::text AND {live("c")}),
u AS (
  UPDATE {T} t SET {_MAP_COLUMNS} = (
      SELECT 'm', NULL::text, n.f, o.exp, {gone_of("n.f")}, NULL::bigint, NULL::timestamptz,
             NULL::timestamptz, 0
      FROM (SELECT {_OLD_FIELDS} AS f, {_OLD_EXPIRY} AS exp) o,
           LATERAL (SELECT o.f || {_NEW_FIELD} AS f) n)
  WHERE t.key = $1::text AND NOT EXISTS (SELECT 1 FROM closed)
    AND ($5::int IS NULL OR ({_OLD_FIELDS} -> $2::text) IS NOT NULL
         OR (SELECT count(*) FROM jsonb_object_keys({_OLD_FIELDS})) < $5::int)
  RETURNING t.fields::text AS items)
SELECT EXISTS (SELECT 1 FROM closed), (SELECT items FROM u)"""
    # $1 key, $2 capacity, $3 interval, $4 cost, $5 block
    # -> (outcome, points, seconds to reset, seconds to the end of a ban)
    bucket_take = f"""
INSERT INTO {T} AS t (key, kind, points, reset_at, banned_until, expires_at, aux)
SELECT $1::text, 'b', s.points, s.reset_at, s.banned_until, s.expires_at, s.outcome
FROM {_FRESH_BUCKET} s0, LATERAL ({_bucket_step("s0")}) s
ON CONFLICT (key) DO UPDATE SET
  (kind, value, fields, gone_at, points, reset_at, banned_until, expires_at, aux) = (
    SELECT 'b', NULL::text, NULL::jsonb, NULL::timestamptz, s.points, s.reset_at, s.banned_until,
           s.expires_at, s.outcome
    FROM {_OLD_BUCKET} s0, LATERAL ({_bucket_step("s0")}) s)
WHERE t.kind = 'b' OR NOT {_L}
RETURNING t.aux, t.points, extract(epoch FROM t.reset_at - statement_timestamp())::float8,
  CASE WHEN t.banned_until > statement_timestamp()
       THEN extract(epoch FROM t.banned_until - statement_timestamp())::float8 END"""
    # $1 key, $2 capacity, $3 interval, $4 duration
    bucket_ban = f"""
INSERT INTO {T} AS t (key, kind, points, reset_at, banned_until, expires_at)
VALUES ($1::text, 'b', $2::bigint, {expiry("$3")}, {expiry("$4")},
        statement_timestamp() + ($4::float8 + 60) * interval '1 second')
ON CONFLICT (key) DO UPDATE SET kind = 'b', value = NULL, fields = NULL, gone_at = NULL,
  points = CASE WHEN {_L} THEN t.points ELSE EXCLUDED.points END,
  reset_at = CASE WHEN {_L} THEN t.reset_at ELSE EXCLUDED.reset_at END,
  banned_until = EXCLUDED.banned_until, expires_at = EXCLUDED.expires_at
WHERE t.kind = 'b' OR NOT {_L}
RETURNING 1"""
    # $1 batch size -> rows deleted
    sweep = f"""
WITH d AS (DELETE FROM {T} t WHERE t.key IN (
    SELECT x.key FROM {T} x
    WHERE x.expires_at <= statement_timestamp() OR x.gone_at <= statement_timestamp()
    LIMIT $1::int)
  AND NOT {_L} RETURNING 1)
SELECT count(*)::int FROM d"""
