"""The hot statements of a saga's steps on PostgreSQL, run straight through psycopg.

SQLAlchemy builds and compiles each statement once per dialect; on PostgreSQL the compiled SQL then runs on the
transaction's own psycopg connection, which skips SQLAlchemy's per-execution work (parameter processing, result
metadata, row processing): profiling a worker under load put that at a third of its CPU. Anywhere else (SQLite)
the statement runs through SQLAlchemy as usual, so both paths are exercised by the same tests.

Only for statements that need nothing of SQLAlchemy at execution time on PostgreSQL: UPDATEs and SELECTs with
plain bound parameters (no Python-side column defaults, no expanding IN lists) whose types psycopg converts the
same way (timestamps with time zone come back aware, as UtcDateTime makes them). Errors are raised as
SQLAlchemy's own exceptions, with a dropped connection invalidated, as SQLAlchemy does.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.pq import ExecStatus
from psycopg.rows import namedtuple_row
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ClauseElement

_TUPLES_OK = ExecStatus.TUPLES_OK


class FastStatement:
    """A prebuilt statement; run(conn, params) returns an object with first(), all(), scalar_one(), rowcount."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._sql: str | None = None
        self._defaults: dict[str, Any] = {}

    def run(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        if conn.dialect.name != "postgresql":
            return conn.execute(self.statement, dict(params))  # type: ignore[call-overload]
        sql, values = self._bound(conn, params)
        cursor = _raw(conn).cursor(row_factory=namedtuple_row)
        try:
            cursor.execute(sql, values)
        except psycopg.Error as exc:
            raise _as_sqlalchemy_error(conn, exc, sql, values, cursor) from exc
        return _Rows(cursor)

    def _bound(self, conn: Connection, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        if self._sql is None:
            compiled = self.statement.compile(dialect=conn.dialect)
            # the values written into the statement itself (status == 'PENDING', attempts + 1) are bound
            # parameters too; SQLAlchemy would fill them in on each execution
            self._defaults = dict(compiled.params)
            self._sql = str(compiled)
        return self._sql, {**self._defaults, **params}


def run_together(conn: Connection, statements: Sequence[tuple[FastStatement, Mapping[str, Any]]]) -> list[Any]:
    """Run `statements` in order and return each one's result, as FastStatement.run would.

    On PostgreSQL they travel in one round trip (psycopg's pipeline mode; with the transaction's BEGIN when they
    open it): the server still runs them one after the other, each with its own snapshot under READ COMMITTED,
    so a statement after a lock sees what the transaction it waited for committed. An error in one aborts the
    rest and is raised here, as SQLAlchemy's exception."""
    if conn.dialect.name != "postgresql":
        return [statement.run(conn, params) for statement, params in statements]
    raw = _raw(conn)
    sent: list[tuple[Any, str, dict[str, Any]]] = []
    try:
        with raw.pipeline():
            for statement, params in statements:
                sql, values = statement._bound(conn, params)
                cursor = raw.cursor(row_factory=namedtuple_row)
                sent.append((cursor, sql, values))
                cursor.execute(sql, values)
    except psycopg.Error as exc:
        cursor, sql, values = sent[-1] if sent else (None, "", {})
        raise _as_sqlalchemy_error(conn, exc, sql, values, cursor) from exc
    return [_Rows(cursor) for cursor, _, _ in sent]


def _raw(conn: Connection) -> Any:
    raw = conn.connection.driver_connection
    assert raw is not None
    return raw


def _as_sqlalchemy_error(conn: Connection, exc: psycopg.Error, sql: str, values: Mapping[str, Any],
                         cursor: Any) -> sa_exc.StatementError:
    """What SQLAlchemy would have raised: callers keep catching sqlalchemy.exc (IntegrityError, the API's
    OperationalError -> 503), and a connection the database dropped is invalidated, not handed out again."""
    disconnect = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)  # type: ignore[arg-type]
    if disconnect:
        conn.invalidate(exc)
    return sa_exc.DBAPIError.instance(sql, dict(values), exc, psycopg.Error, connection_invalidated=disconnect,
                                      dialect=conn.dialect)


class _Rows:
    """The few parts of SQLAlchemy's result the repository uses, over a psycopg cursor.

    Whether rows came back is read off the result's status: psycopg builds a new list of column objects on every
    read of `cursor.description` (profiled: an eighth of a worker's CPU in the step statements)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self.rowcount: int = cursor.rowcount
        result = cursor.pgresult
        self._has_rows = result is not None and result.status == _TUPLES_OK
        if not self._has_rows:
            cursor.close()

    def first(self) -> Any:
        row = self._cursor.fetchone() if self._has_rows else None
        self._cursor.close()
        return row

    def all(self) -> Sequence[Any]:
        rows = self._cursor.fetchall() if self._has_rows else []
        self._cursor.close()
        return rows

    def scalar_one(self) -> Any:
        row = self.first()
        if row is None:
            raise LookupError("no row")
        return row[0]
