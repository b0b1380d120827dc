"""Retention: finished sagas older than RETENTION_DAYS leave the working tables, in short batches.

Finished means COMPLETED or COMPENSATED: nothing will run in them again and nobody is asked to act. A FAILED saga is
parked for a person and always stays, as do RUNNING and COMPENSATING ones. Each batch is one transaction of at most
RETENTION_BATCH sagas, taken oldest first with FOR UPDATE SKIP LOCKED: a saga a worker, a support action or another
runner holds is skipped, never waited for (and on PostgreSQL a batch gives up after LOCK_TIMEOUT rather than queue
behind a lock it did not foresee). Orders, the read models and the audit log are never touched; the saga's row is
kept in `sagas_archive` in both modes (its order still lists it), its steps and attempts in `saga_steps_archive`
and `step_attempts_archive` with RETENTION_MODE=archive, deleted with RETENTION_MODE=delete.

Two ways in: `bookmarket retention run` (an operator; runs until nothing old is left) and `retention_pass` (the
`saga.retention` task beat schedules every RETENTION_INTERVAL_S, and the worker's sweeper loop at the same interval),
which does at most RETENTION_MAX_BATCHES batches and, on PostgreSQL, only while no other process is running a pass
(a transaction-level advisory lock taken with try: a pass that finds it held stops at once).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from domain.errors import SagaArchived, SagaNotFound
from domain.model import utcnow
from infra import retention as store
from infra.db import Database

log = logging.getLogger(__name__)

LOCK_TIMEOUT = "2s"  # PostgreSQL: a batch that would wait longer for a lock is rolled back and tried later
PASS_LOCK = 0x6B6D7274  # the advisory lock key of scheduled passes ("kmrt")


@dataclass(frozen=True)
class Batch:
    sagas: int
    steps: int
    attempts: int
    seconds: float

    @property
    def rows(self) -> int:
        return self.sagas + self.steps + self.attempts


@dataclass
class Report:
    batches: int = 0
    sagas: int = 0
    steps: int = 0
    attempts: int = 0
    seconds: float = 0.0
    busy: bool = False  # a scheduled pass found another process running one (PostgreSQL)

    @property
    def rows(self) -> int:
        return self.sagas + self.steps + self.attempts

    def add(self, batch: Batch) -> None:
        self.batches += 1
        self.sagas += batch.sagas
        self.steps += batch.steps
        self.attempts += batch.attempts
        self.seconds += batch.seconds

    def as_dict(self) -> dict[str, object]:
        return {"batches": self.batches, "sagas": self.sagas, "steps": self.steps, "attempts": self.attempts,
                "rows": self.rows, "seconds": round(self.seconds, 3), "busy": self.busy}


def missing(conn: Connection, saga_id: int) -> SagaNotFound:
    """What to raise for a saga not in `sagas`: SagaArchived (410) when retention moved it, else SagaNotFound."""
    row = store.archived_saga(conn, saga_id)
    if row is None:
        return SagaNotFound(saga_id)
    return SagaArchived(saga_id, row.status, row.order_id, row.archived_at.isoformat(), bool(row.steps_kept))


def cutoff(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)


def count_old(db: Database, days: float, now: datetime | None = None) -> int:
    """How many finished sagas ended more than `days` ago: what a run would move (a dry run)."""
    with db.reading() as conn:
        return store.count_old(conn, cutoff(now or utcnow(), days))


def one_batch(db: Database, days: float, batch: int, mode: str, now: datetime | None = None,
              exclusive: bool = False) -> Batch | None:
    """Move up to `batch` finished sagas older than `days` in one transaction. None when `exclusive` and another
    process holds the pass lock; a Batch of 0 sagas when nothing old (and not locked by others) is left."""
    started = time.monotonic()
    now = now or utcnow()
    with db.transaction() as conn:
        if db.dialect == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            if exclusive and not _try_pass_lock(conn):
                return None
        ids = store.pick_old(conn, cutoff(now, days), batch)
        moved = store.move(conn, ids, keep_steps=mode == "archive", now=now)
    return Batch(moved.sagas, moved.steps, moved.attempts, time.monotonic() - started)


def _try_pass_lock(conn: Connection) -> bool:
    return bool(conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(PASS_LOCK))).scalar())


def run(db: Database, days: float, batch: int, mode: str, max_batches: int | None = None,
        exclusive: bool = False, on_batch: Callable[[Batch], None] | None = None,
        clock: Callable[[], datetime] = utcnow) -> Report:
    """Batches until none is left to move (or `max_batches` were done). A batch that hit LOCK_TIMEOUT is skipped
    (its sagas come back in a later batch or run)."""
    if days <= 0:
        raise ValueError("retention needs a number of days above 0 (RETENTION_DAYS 0 keeps sagas forever)")
    if mode not in ("archive", "delete"):
        raise ValueError(f"RETENTION_MODE must be archive or delete, got {mode!r}")
    report = Report()
    timeouts = 0
    while max_batches is None or report.batches < max_batches:
        try:
            done = one_batch(db, days, batch, mode, clock(), exclusive)
        except OperationalError as exc:
            if "lock timeout" not in str(exc) or timeouts >= 3:
                raise
            timeouts += 1
            log.warning("retention: a batch waited more than %s for a lock; trying again", LOCK_TIMEOUT)
            continue
        if done is None:
            report.busy = True
            break
        if done.sagas == 0:
            break
        report.add(done)
        if on_batch is not None:
            on_batch(done)
        if done.sagas < batch:
            break
    return report


def retention_pass(db: Database, days: float, batch: int, mode: str, max_batches: int,
                   clock: Callable[[], datetime] = utcnow) -> Report:
    """The scheduled pass (beat's `saga.retention`, the worker's sweeper loop): at most `max_batches` batches, one
    process at a time. RETENTION_DAYS 0: nothing."""
    if days <= 0:
        return Report()
    report = run(db, days, batch, mode, max_batches=max_batches, exclusive=True, clock=clock)
    if report.sagas:
        log.info("retention: moved %d finished saga(s) (%d steps, %d attempts) in %d batch(es), %.1fs, mode=%s",
                 report.sagas, report.steps, report.attempts, report.batches, report.seconds, mode)
    return report
