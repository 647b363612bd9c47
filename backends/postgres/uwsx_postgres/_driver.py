"""What the SQL layer needs from a driver, and how driver failures become uwsx errors.

The SQL modules are written once, with ``$n`` placeholders and explicit casts on every
parameter; ``_driver_asyncpg`` and ``_driver_psycopg`` are thin shims that run that SQL and
translate their exceptions with :func:`translate`:

* the request never reached the server (no connection, pool exhausted, refused) -> Unavailable;
* the server rejected the statement (constraint, bad cast, lock timeout) -> BackendError, or
  Unavailable when the server says it is shutting down / overloaded (nothing was applied);
* the connection died or timed out after the statement was sent -> Indeterminate for writes
  (it may have committed), Unavailable for reads and for statements inside a transaction that
  never reached COMMIT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

from uwsx.errors import BackendError, Indeterminate, Unavailable
from uwsx.redact import redact_url

__all__ = [
    "Dedicated",
    "Driver",
    "Executor",
    "Phase",
    "Row",
    "UniqueViolation",
    "lost_state",
    "quote_ident",
    "reusable",
    "translate",
]

Row = Sequence[Any]
#: Where a failure happened: getting a connection, a statement in autocommit, a statement
#: inside an explicit transaction, or the COMMIT of one.
Phase = Literal["acquire", "write", "read", "tx", "commit"]

NotifyCallback = Callable[[str, str], None]
LostCallback = Callable[[BaseException | None], None]


class UniqueViolation(BackendError):
    """A unique constraint rejected an insert (SQLSTATE 23505); nothing was applied."""


class Executor(Protocol):
    """A connection inside a transaction."""

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]: ...

    async def execute(self, sql: str) -> None:
        """Run parameterless SQL (DDL), possibly several statements."""
        ...


class Dedicated(Protocol):
    """A connection held for the life of a LISTEN session or of session locks."""

    @property
    def pid(self) -> int: ...

    @property
    def alive(self) -> bool: ...

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]: ...

    async def listen(self, channels: Sequence[str]) -> None:
        """LISTEN each channel (names are passed to the server quoted)."""
        ...

    async def unlisten(self, channels: Sequence[str]) -> None: ...

    def on_notify(self, callback: NotifyCallback) -> None:
        """Call ``callback(channel, payload)`` for every notification, in arrival order."""
        ...

    def on_lost(self, callback: LostCallback) -> None:
        """Call ``callback(error)`` once when the session ends other than by :meth:`close`."""
        ...

    async def close(self) -> None: ...


class Driver(Protocol):
    """A pool (or engine, or single connection) plus the means to open dedicated sessions."""

    @property
    def name(self) -> str:
        """``asyncpg`` or ``psycopg``."""
        ...

    @property
    def server_version(self) -> str: ...

    async def fetch(
        self, sql: str, args: Sequence[object] = (), *, write: bool = True
    ) -> list[Row]:
        """Run one statement in autocommit and return its rows (tuples by position)."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        """BEGIN ... COMMIT on one pooled connection (ROLLBACK when the body raises)."""
        ...

    async def dedicated(self) -> Dedicated: ...

    async def probe(self) -> None:
        """Check the server answers and record its version."""
        ...

    async def close(self) -> None: ...


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


#: SQLSTATEs meaning the session is gone (the statement's fate is unknown to us).
_LOST_STATES = ("57P01", "57P02", "57P05")
#: SQLSTATEs meaning the server refused before applying anything; retrying later is safe.
_REFUSED_STATES = ("57P03", "57014", "40001", "40P01", "55P03", "55006", "25006")


def lost_state(sqlstate: str | None) -> bool:
    """True for SQLSTATEs that end the session (connection exceptions, shutdowns)."""
    state = sqlstate or ""
    return state.startswith("08") or state in _LOST_STATES


def reusable(exc: BaseException, lost: Callable[[BaseException], bool]) -> bool:
    """Whether a connection may go back to its pool after ``exc`` ended a use of it.

    Only when the connection is known to be idle: the server answered with an error, or our own
    code raised between statements. A cancelled or timed-out statement may still be running,
    with the driver's cancel request unanswered, and a lost connection is gone: such a
    connection is kept only once the server has answered the cancel request within a short
    bound, and dropped otherwise (each shim's docstring says how).

    :param lost: the driver's test for an exception that means the connection is lost or
        timed out (applied to the driver exception a uwsx error was translated from).
    """
    if not isinstance(exc, Exception):
        return False  # CancelledError, KeyboardInterrupt, ...
    cause = exc.__cause__ if isinstance(exc, BackendError) else exc
    return cause is None or not lost(cause)


def translate(
    exc: BaseException, phase: Phase, *, sqlstate: str | None, lost: bool, where: str
) -> BaseException:
    """The uwsx error for a driver failure.

    :param sqlstate: the server's SQLSTATE when the error came from the server.
    :param lost: the driver reports the connection closed or timed out.
    :param where: the operation, for the message.
    """
    detail = redact_url(str(exc) or type(exc).__name__)
    state = sqlstate or ""
    lost = lost or lost_state(state)
    if phase == "acquire":
        return Unavailable(f"{where}: cannot reach PostgreSQL: {detail}")
    if lost:
        if phase in ("write", "commit"):
            return Indeterminate(
                f"{where}: connection lost after sending, may have applied: {detail}"
            )
        return Unavailable(f"{where}: connection lost, not applied: {detail}")
    if state.startswith("53") or state in _REFUSED_STATES:
        return Unavailable(f"{where}: PostgreSQL refused the statement ({state}): {detail}")
    if state == "23505":
        return UniqueViolation(f"{where}: {detail}")
    if state == "42P01":
        return BackendError(
            f"{where}: table missing ({detail}); create the uwsx tables (auto_migrate=True or "
            "uwsx_postgres.schema.metadata in your migrations)"
        )
    return BackendError(f"{where}: PostgreSQL error {state or '?'}: {detail}")
