"""Engines and transactions, for PostgreSQL and SQLite alike."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from infra.config import Settings

READ_ONLY = "bookmarket_read_only"


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use psycopg 3 for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def engine_options(url: str, pool_size: int = 16, *, prepared_statements: bool = True,
                   application_name: str = "bookmarket") -> dict[str, Any]:
    """create_engine keyword arguments for `url` (also handed to Flask-SQLAlchemy by the API).

    On PostgreSQL a process keeps at most `pool_size` connections (DB_POOL_SIZE) and opens no more: a thread that
    finds them all in use waits for one (up to 30 s). A connection is held only for a transaction, never across a
    provider call, so 16 carry the API's 16 threads and a worker's 128 steps in flight alike.

    Each connection says which process opened it (`application_name`, seen in pg_stat_activity) unless the URL
    names one. Without `prepared_statements` (DATABASE_PREPARED_STATEMENTS=off) psycopg never prepares a
    statement on the server (`prepare_threshold=None`; by default it does from a statement's 5th execution on a
    connection): a prepared statement belongs to one server session, which a pooler in transaction mode hands to
    another client after each transaction (PgBouncer follows them only from 1.22 on, with libpq 17: README)."""
    if normalize_url(url).startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    # no overflow: a busy process does not open and close extra connections, and the count stays bounded;
    # liveness is checked only for a connection idle for a while (see _ping_after_idle).
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    if "application_name" not in sa.engine.make_url(url).query:
        connect_args["application_name"] = application_name
    if not prepared_statements:
        connect_args["prepare_threshold"] = None
    return {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": 30, "connect_args": connect_args}


def make_engine(url: str, pool_size: int = 16, *, prepared_statements: bool = True,
                application_name: str = "bookmarket") -> Engine:
    """An engine for `url`, prepared for our transactions."""
    url = normalize_url(url)
    options = engine_options(url, pool_size, prepared_statements=prepared_statements,
                             application_name=application_name)
    return prepare_engine(sa.create_engine(url, **options))


PING_AFTER_IDLE_S = 5.0


def prepare_engine(engine: Engine) -> Engine:
    """SQLite gets WAL, a busy timeout and write transactions that take the lock up front (no upgrade deadlocks).

    PostgreSQL connections are pinged when checked out after PING_AFTER_IDLE_S or more in the pool: a database
    restart is noticed before a transaction fails, and a busy process pays no round trip per transaction for it
    (pool_pre_ping pings on every checkout). A connection that dies while in use is handled as SQLAlchemy does:
    the error invalidates the pool, and the caller's transaction fails and is retried by whoever owns it.
    """
    if engine.dialect.name != "sqlite":
        _ping_after_idle(engine)
        return engine

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "synchronous=NORMAL", "foreign_keys=ON"):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _ping_after_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("checked_in_at")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            with dbapi_conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as exc:  # noqa: BLE001 - any failure: let the pool replace this connection
            raise sa.exc.DisconnectionError(str(exc)) from exc


class Database:
    """The one way the application opens transactions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str, pool_size: int = 16, *, prepared_statements: bool = True,
                 application_name: str = "bookmarket") -> Database:
        return cls(make_engine(url, pool_size, prepared_statements=prepared_statements,
                               application_name=application_name))

    @classmethod
    def for_process(cls, settings: Settings, role: str, pool_size: int | None = None) -> Database:
        """The database of a process of `role` (api, worker, sweeper, cli...): DATABASE_URL, at most DB_POOL_SIZE
        connections unless `pool_size` says otherwise, DATABASE_PREPARED_STATEMENTS, and `bookmarket-<role>` as
        the connections' application_name."""
        return cls.from_url(settings.database_url, settings.db_pool_size if pool_size is None else pool_size,
                            prepared_statements=settings.database_prepared_statements,
                            application_name=f"bookmarket-{role}")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A read-write transaction, committed on success, rolled back on error."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection whose statements commit one by one (PostgreSQL: a single statement needs no BEGIN and
        COMMIT round trips and is atomic by itself). Only for work that is one statement."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only transaction (on SQLite it does not take the write lock)."""
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def sqlite_url_for(data_dir: str | os.PathLike[str]) -> str:
    """The SQLite URL of the embedded default inside data_dir."""
    return f"sqlite:///{Path(data_dir).resolve() / 'bookmarket.db'}"
