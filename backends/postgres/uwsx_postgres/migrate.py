"""Auto-migration: create a table set from :mod:`uwsx_postgres.schema` and verify it, every time.

The first use of a table set by a backend reads the catalog once (one round trip). When
anything is missing and ``auto_migrate`` is on, the DDL compiled from the SQLAlchemy objects
runs in one transaction behind a transaction-scoped advisory lock, so concurrent migrators (other
processes, other backends) take turns instead of racing; each statement is ``IF NOT EXISTS``.
Then the catalog is read again and every expected table, column (with its type), index and
sequence must be there. A table that exists with missing or differently typed columns is
reported by name instead of failing later inside an operation. (The original checked columns
only when it lost a creation race, so a drifted table went unnoticed.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateSequence, CreateTable

from uwsx.errors import BackendError, Indeterminate, Unavailable
from uwsx_postgres._driver import Driver, Row
from uwsx_postgres.schema import TableSet

__all__ = ["MIGRATION_LOCK", "Migrator", "ddl_statements", "expected_objects"]

#: Advisory lock key serialising uwsx migrations in one database ("uwsxmigr").
MIGRATION_LOCK = 0x7577_7378_6D69_6772

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]

_CATALOG = """
SELECT c.relname, c.relkind::text, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class c
LEFT JOIN pg_attribute a
  ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
  AND c.relname = ANY($1::text[])
"""


def _type_name(compiled: str) -> str:
    return compiled.lower().split(" collate ")[0].strip()


def expected_objects(ts: TableSet) -> tuple[dict[str, dict[str, str]], set[str], set[str]]:
    """``({table: {column: type}}, {index}, {sequence})`` the table set consists of."""
    tables = {
        t.name: {c.name: _type_name(str(c.type.compile(dialect=_DIALECT))) for c in t.columns}
        for t in ts.tables
    }
    indexes = {str(i.name) for t in ts.tables for i in t.indexes}
    sequences = {str(s.name) for s in ts.sequences}
    return tables, indexes, sequences


def ddl_statements(ts: TableSet) -> list[str]:
    """``CREATE ... IF NOT EXISTS`` statements for the table set, in dependency order."""
    out = [
        str(CreateSequence(s, if_not_exists=True).compile(dialect=_DIALECT)) for s in ts.sequences
    ]
    for table in ts.tables:
        out.append(str(CreateTable(table, if_not_exists=True).compile(dialect=_DIALECT)).strip())
        out.extend(
            str(CreateIndex(i, if_not_exists=True).compile(dialect=_DIALECT))
            for i in sorted(table.indexes, key=lambda i: str(i.name))
        )
    return out


def _problems(ts: TableSet, rows: Sequence[Row]) -> tuple[list[str], list[str]]:
    """``(missing, drifted)``: objects to create, and existing tables that do not match."""
    tables, indexes, sequences = expected_objects(ts)
    kinds: dict[str, str] = {}
    columns: dict[str, dict[str, str]] = {}
    for relname, relkind, attname, typ in rows:
        kinds[relname] = relkind
        if attname is not None:
            columns.setdefault(relname, {})[attname] = str(typ).lower()
    missing: list[str] = []
    drifted: list[str] = []
    for name, want in tables.items():
        if name not in kinds:
            missing.append(f"table {name}")
            continue
        if kinds[name] not in ("r", "p"):
            drifted.append(f"{name} is not a table (relkind {kinds[name]!r})")
            continue
        have = columns.get(name, {})
        lacking = [c for c in want if c not in have]
        if lacking:
            drifted.append(f'existing table "{name}" is missing column(s): {", ".join(lacking)}')
        wrong = [
            f"{c} is {have[c]}, expected {t}" for c, t in want.items() if c in have and have[c] != t
        ]
        if wrong:
            drifted.append(f'existing table "{name}" has column type(s) {"; ".join(wrong)}')
    missing += [f"index {i}" for i in sorted(indexes) if i not in kinds]
    missing += [f"sequence {s}" for s in sorted(sequences) if s not in kinds]
    return missing, drifted


class Migrator:
    """Creates (when allowed) and verifies table sets, once per table set per backend."""

    def __init__(self, driver: Driver, *, auto_migrate: bool) -> None:
        self._driver = driver
        self._auto = auto_migrate
        self._done: set[str] = set()
        self._flights: dict[str, asyncio.Lock] = {}

    def ready(self, ts: TableSet) -> bool:
        return ts.key in self._done

    async def ensure(self, ts: TableSet) -> None:
        """Verify (and with ``auto_migrate`` create) ``ts``; concurrent callers share one run.

        :raises BackendError: tables are missing (and may not be created) or have drifted.
        """
        if ts.key in self._done:
            return
        lock = self._flights.setdefault(ts.key, asyncio.Lock())
        async with lock:
            if ts.key in self._done:
                return
            await self._migrate(ts)
            self._done.add(ts.key)

    async def _inspect(self, ts: TableSet) -> tuple[list[str], list[str]]:
        tables, indexes, sequences = expected_objects(ts)
        names = sorted({*tables, *indexes, *sequences})
        rows = await self._driver.fetch(_CATALOG, [names], write=False)
        return _problems(ts, rows)

    async def _migrate(self, ts: TableSet) -> None:
        missing, drifted = await self._inspect(ts)
        if drifted:
            raise BackendError(self._drift_message(ts, drifted))
        if not missing:
            return
        if not self._auto:
            raise BackendError(
                f"uwsx tables for {ts.kind} space {ts.space!r} are missing ({', '.join(missing)}) "
                "and auto_migrate is off: create them from uwsx_postgres.schema.metadata"
            )
        for attempt in range(3):
            try:
                await self._create(ts)
                break
            except (Indeterminate, Unavailable):
                raise
            except BackendError:
                # Another tool created an object between our check and our DDL; look again.
                if attempt == 2:
                    raise
        missing, drifted = await self._inspect(ts)
        if drifted or missing:
            raise BackendError(self._drift_message(ts, drifted + missing))

    async def _create(self, ts: TableSet) -> None:
        async with self._driver.transaction() as tx:
            await tx.fetch("SELECT pg_advisory_xact_lock($1::bigint)", [MIGRATION_LOCK])
            for statement in ddl_statements(ts):
                await tx.execute(statement)

    @staticmethod
    def _drift_message(ts: TableSet, problems: list[str]) -> str:
        return (
            f"uwsx tables for {ts.kind} space {ts.space!r} do not match the schema: "
            + "; ".join(problems)
            + ". Drop or rename them, migrate them to uwsx_postgres.schema, or use another "
            "space name"
        )
