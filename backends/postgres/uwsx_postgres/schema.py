"""Every uwsx table, declared once with SQLAlchemy Core.

Auto-migration compiles its DDL from these objects, and applications include them in their own
migrations::

    # alembic env.py
    from uwsx_postgres.schema import metadata as uwsx_metadata
    target_metadata = [app_metadata, uwsx_metadata]

``metadata`` holds the fixed tables (KV, leases) and the table sets of the default spaces. A
``space(name)`` of the SortedLog, Stream or Queue port uses its own table set named after
``name``; add it to your metadata with :func:`add_space` (``add_space(md, "log", "audit")``).

Table sets
----------
``kv``      ``uwsx_kv``: one row per key (strings, counters, maps as JSONB, buckets)
``locks``   ``uwsx_locks`` and the sequence ``uwsx_lock_fence`` (fences of leases and session
            locks)
``log``     ``<name>`` entries keyed ``(log, seq)`` and ``<name>_seq`` counters
``stream``  the log tables plus ``<name>_dedup`` (request ids) and ``<name>_prod`` (producers)
``queue``   ``<name>`` jobs
``tasks``   ``<name>_tasks`` task rows of queue space ``<name>``
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Sequence,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from uwsx.errors import InvalidNameError
from uwsx.ports.checks import check_space_name

__all__ = [
    "DEFAULT_SPACES",
    "KIND_SUFFIXES",
    "KV_TABLE",
    "LOCK_FENCE_SEQUENCE",
    "LOCK_TABLE",
    "TableSet",
    "add_space",
    "check_table_space",
    "metadata",
    "table_set",
]

KV_TABLE = "uwsx_kv"
LOCK_TABLE = "uwsx_locks"
LOCK_FENCE_SEQUENCE = "uwsx_lock_fence"

#: Space of each port's default table set.
DEFAULT_SPACES: dict[str, str] = {
    "log": "uwsx_log",
    "stream": "uwsx_stream",
    "queue": "uwsx_queue",
    "tasks": "uwsx_queue",
}

#: Table-name suffixes each kind derives from a space name; index names add up to 6 more.
KIND_SUFFIXES: dict[str, tuple[str, ...]] = {
    "log": ("", "_seq"),
    "stream": ("", "_seq", "_dedup", "_prod"),
    "queue": ("",),
    "tasks": ("_tasks",),
}
_LONGEST_DERIVED = 6 + 6  # "_dedup"/"_tasks" plus an index tag such as "_xfexp"

_NOW = text("now()")
_ts = DateTime(timezone=True)


def _key_text() -> Text:
    # Byte order, so prefix scans can use the btree index whatever the database's collation.
    return Text(collation="C")


def check_table_space(name: object, what: str = "space name") -> str:
    """A space name whose derived table and index names still fit in 63 bytes."""
    checked = check_space_name(name, what)
    if len(checked) + _LONGEST_DERIVED > 63:
        raise InvalidNameError(
            f"{what} {checked!r} is too long: at most {63 - _LONGEST_DERIVED} characters, "
            "so derived table and index names fit Postgres' 63-byte identifiers"
        )
    return checked


@dataclass(frozen=True, slots=True)
class TableSet:
    """Tables (and sequences) one port needs, created and verified together."""

    kind: str
    space: str
    tables: tuple[Table, ...]
    sequences: tuple[Sequence, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.space}"


def _table(md: MetaData, name: str, *items: Any) -> tuple[Table, bool]:
    """``md``'s table ``name``, declared from ``items`` unless it already is; True if new.

    :raises InvalidNameError: ``md`` already declares ``name`` with other columns (the space
        name is taken by a table set of another kind).
    """
    existing = md.tables.get(name)
    if existing is None:
        return Table(name, md, *items), True
    wanted = [i.name for i in items if isinstance(i, Column)]
    if [c.name for c in existing.columns] != wanted:
        raise InvalidNameError(
            f"table {name!r} is already declared with other columns: a space name names one "
            "table set (a log and a stream space may share one; a queue space may not)"
        )
    return existing, False


def _kv(md: MetaData, _space: str) -> TableSet:
    kv, new = _table(
        md,
        KV_TABLE,
        Column("key", _key_text(), nullable=False),
        Column("kind", Text, nullable=False),
        Column("value", Text),
        Column("fields", JSONB),
        Column("expires_at", _ts),
        Column("gone_at", _ts),
        Column("points", BigInteger),
        Column("reset_at", _ts),
        Column("banned_until", _ts),
        # Scratch column: lets one statement report a fact about the row it replaced.
        Column("aux", Integer, nullable=False, server_default=text("0")),
        PrimaryKeyConstraint("key", name=f"{KV_TABLE}_pkey"),
    )
    if new:
        Index(f"{KV_TABLE}_xexp", kv.c.expires_at, postgresql_where=kv.c.expires_at.isnot(None))
        Index(f"{KV_TABLE}_xgone", kv.c.gone_at, postgresql_where=kv.c.gone_at.isnot(None))
    return TableSet("kv", KV_TABLE, (kv,))


def _locks(md: MetaData, _space: str) -> TableSet:
    sequences: dict[str, Sequence] = getattr(md, "_sequences", {})
    fence = sequences.get(LOCK_FENCE_SEQUENCE) or Sequence(
        LOCK_FENCE_SEQUENCE, metadata=md, start=1
    )
    locks, new = _table(
        md,
        LOCK_TABLE,
        Column("key", _key_text(), nullable=False),
        Column("owner", Text, nullable=False),
        Column("fence", BigInteger, nullable=False),
        Column("expires_at", _ts, nullable=False),
        PrimaryKeyConstraint("key", name=f"{LOCK_TABLE}_pkey"),
    )
    if new:
        Index(f"{LOCK_TABLE}_xexp", locks.c.expires_at)
    return TableSet("locks", LOCK_TABLE, (locks,), (fence,))


def _log_tables(md: MetaData, space: str) -> list[Table]:
    entries, _ = _table(
        md,
        space,
        Column("log", _key_text(), nullable=False),
        Column("seq", BigInteger, nullable=False),
        Column("event", Text, nullable=False),
        Column("data", Text, nullable=False),
        Column("created_at", _ts, nullable=False, server_default=_NOW),
        PrimaryKeyConstraint("log", "seq", name=f"{space}_pkey"),
    )
    counters, new = _table(
        md,
        f"{space}_seq",
        Column("log", _key_text(), nullable=False),
        Column("seq", BigInteger, nullable=False),
        # Lowest seq still stored: trimming and expiry raise it, reads never go below it.
        Column("low", BigInteger, nullable=False),
        # Expiry of the entries (not of the counter, which never expires).
        Column("expires_at", _ts),
        Column("epoch", Uuid, nullable=False, server_default=text("gen_random_uuid()")),
        Column("created_at", _ts, nullable=False, server_default=_NOW),
        PrimaryKeyConstraint("log", name=f"{space}_seq_pkey"),
    )
    if new:
        Index(
            f"{space}_seq_xexp",
            counters.c.expires_at,
            postgresql_where=counters.c.expires_at.isnot(None),
        )
    return [entries, counters]


def _log(md: MetaData, space: str) -> TableSet:
    return TableSet("log", space, tuple(_log_tables(md, space)))


def _stream(md: MetaData, space: str) -> TableSet:
    tables = _log_tables(md, space)
    dedup, _ = _table(
        md,
        f"{space}_dedup",
        Column("log", _key_text(), nullable=False),
        Column("producer", Text, nullable=False),
        Column("request_id", Text, nullable=False),
        Column("seq", BigInteger, nullable=False),
        Column("gen", Uuid, nullable=False),
        PrimaryKeyConstraint("log", "producer", "request_id", name=f"{space}_dedup_pkey"),
    )
    producers, new = _table(
        md,
        f"{space}_prod",
        Column("log", _key_text(), nullable=False),
        Column("producer", Text, nullable=False),
        # Records of one producer incarnation; a producer idle past its TTL starts a new one.
        Column("gen", Uuid, nullable=False),
        Column("expires_at", _ts),
        PrimaryKeyConstraint("log", "producer", name=f"{space}_prod_pkey"),
    )
    if new:
        Index(
            f"{space}_prod_xexp",
            producers.c.expires_at,
            postgresql_where=producers.c.expires_at.isnot(None),
        )
    return TableSet("stream", space, (*tables, dedup, producers))


def _queue(md: MetaData, space: str) -> TableSet:
    jobs, new = _table(
        md,
        space,
        Column("id", BigInteger, Identity(always=False), nullable=False),
        Column("ns", Text, nullable=False),
        Column("queue", Text, nullable=False),
        Column("payload", Text, nullable=False),
        Column("request_id", Text),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("created_at", _ts, nullable=False, server_default=_NOW),
        Column("claimed_until", _ts),
        Column("token", Text),
        PrimaryKeyConstraint("id", name=f"{space}_pkey"),
    )
    if new:
        Index(f"{space}_xq", jobs.c.ns, jobs.c.queue, jobs.c.id)
    return TableSet("queue", space, (jobs,))


def _tasks(md: MetaData, space: str) -> TableSet:
    name = f"{space}_tasks"
    tasks, new = _table(
        md,
        name,
        Column("ns", Text, nullable=False),
        Column("id", Text, nullable=False),
        # Insertion order: lists are newest first, pending rows are claimed oldest first.
        Column("ord", BigInteger, Identity(always=False), nullable=False),
        Column("name", Text, nullable=False),
        Column("input", Text, nullable=False),
        Column("idempotency_key", Text),
        Column("request_id", Text),
        Column("status", Text, nullable=False),
        Column("result", Text),
        Column("error", Text),
        Column("fence", Text, nullable=False),
        Column("fence_expires_at", _ts, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("created_at", _ts, nullable=False, server_default=_NOW),
        Column("updated_at", _ts, nullable=False, server_default=_NOW),
        PrimaryKeyConstraint("ns", "id", name=f"{name}_pkey"),
    )
    if new:
        Index(f"{name}_xord", tasks.c.ns, tasks.c.ord)
        Index(
            f"{name}_xfexp",
            tasks.c.ns,
            tasks.c.fence_expires_at,
            postgresql_where=tasks.c.status == "running",
        )
        Index(
            f"{name}_xdone",
            tasks.c.ns,
            tasks.c.updated_at,
            postgresql_where=tasks.c.status.in_(("committed", "failed")),
        )
    return TableSet("tasks", space, (tasks,))


_BUILDERS: dict[str, Callable[[MetaData, str], TableSet]] = {
    "kv": _kv,
    "locks": _locks,
    "log": _log,
    "stream": _stream,
    "queue": _queue,
    "tasks": _tasks,
}


def add_space(md: MetaData, kind: str, space: str) -> TableSet:
    """Declare the table set of ``kind`` (``log``, ``stream``, ``queue``, ``tasks``, ``kv``,
    ``locks``) for ``space`` on ``md`` and return it; tables already declared are reused (a
    log space and a stream space of one name share their entry tables).

    :raises InvalidNameError: ``space`` is not a valid, short enough identifier.
    """
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"unknown table set kind {kind!r}; use one of {sorted(_BUILDERS)}")
    if kind not in ("kv", "locks"):
        check_table_space(space)
    return builder(md, space)


def _build_default() -> MetaData:
    md = MetaData()
    add_space(md, "kv", KV_TABLE)
    add_space(md, "locks", LOCK_TABLE)
    for kind, space in DEFAULT_SPACES.items():
        add_space(md, kind, space)
    return md


#: The fixed tables and the default spaces' table sets.
metadata: MetaData = _build_default()

#: Declarations of non-default spaces, one registry per kind: the same space name used by two
#: kinds gives two declarations, and migration then reports the table that does not match.
_private: dict[str, MetaData] = {}


def table_set(kind: str, space: str | None = None) -> TableSet:
    """The table set of ``kind`` in ``space`` (default space when None), from :data:`metadata`
    for default spaces and from a per-kind private registry otherwise."""
    if space is None:
        space = DEFAULT_SPACES.get(kind, KV_TABLE if kind == "kv" else LOCK_TABLE)
    if kind in ("kv", "locks") or DEFAULT_SPACES.get(kind) == space:
        return add_space(metadata, kind, space)
    return add_space(_private.setdefault(kind, MetaData()), kind, space)
