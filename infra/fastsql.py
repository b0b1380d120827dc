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
        if self._sql is None:
            compiled = self.statement.compile(dialect=conn.dialect)
            # the values written into the statement itself (status == 'PENDING', attempts + 1) are bound
            # parameters too; SQLAlchemy would fill them in on each execution
            self._defaults = dict(compiled.params)
            self._sql = str(compiled)
        raw = conn.connection.driver_connection
        assert raw is not None
        cursor = raw.cursor(row_factory=namedtuple_row)
        values = {**self._defaults, **params}
        try:
            cursor.execute(self._sql, values)
        except psycopg.Error as exc:
            raise _as_sqlalchemy_error(conn, exc, self._sql, values, cursor) from exc
        return _Rows(cursor)


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
