"""Retention's statements: find finished sagas older than a cutoff and move them out of the working tables.

A batch is one transaction: pick up to `limit` finished sagas, oldest first, with FOR UPDATE SKIP LOCKED (a saga a
worker, a support action or another retention run holds is left for a later batch, never waited for), copy their
row to `sagas_archive` (and, when steps are kept, their steps and attempts to the `*_archive` tables), then delete
their attempts, steps and row. Orders, read models (customer_orders, notifications, payments, deliveries) and the
audit log are never touched.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from infra.tables import (
    Time,
    saga_steps,
    saga_steps_archive,
    sagas,
    sagas_archive,
    step_attempts,
    step_attempts_archive,
)

# Finished for good: nothing runs again and nobody is asked to act. FAILED is parked for a person and stays;
# RUNNING and COMPENSATING are active.
FINISHED = ("COMPLETED", "COMPENSATED")


@dataclass(frozen=True)
class Moved:
    sagas: int
    steps: int
    attempts: int

    @property
    def rows(self) -> int:
        return self.sagas + self.steps + self.attempts


def _old(conn: Connection, finished_before: datetime) -> Any:
    # the same predicate as the partial index ix_sagas_finished_retention, so the search reads that index only
    old = sa.and_(sagas.c.status.in_(FINISHED), sagas.c.finished_at < finished_before)
    if conn.dialect.name == "sqlite":
        # SQLite gives a new row the highest id + 1: the newest saga stays, so an id is never given twice
        old = sa.and_(old, sagas.c.id < sa.select(sa.func.max(sagas.c.id)).scalar_subquery())
    return old


def count_old(conn: Connection, finished_before: datetime) -> int:
    """How many finished sagas ended before `finished_before` (what a run would move now)."""
    query = sa.select(sa.func.count()).select_from(sagas).where(_old(conn, finished_before))
    return int(conn.execute(query).scalar_one())


def pick_old(conn: Connection, finished_before: datetime, limit: int) -> list[int]:
    """Lock and return up to `limit` finished sagas that ended before `finished_before`, oldest first, skipping any
    row another transaction holds (PostgreSQL; SQLite has one writer at a time anyway)."""
    query = (sa.select(sagas.c.id).where(_old(conn, finished_before)).order_by(sagas.c.finished_at).limit(limit)
             .with_for_update(skip_locked=True))
    return list(conn.execute(query).scalars())


def move(conn: Connection, ids: Sequence[int], keep_steps: bool, now: datetime) -> Moved:
    """Move the given (locked) sagas out of `sagas`, `saga_steps` and `step_attempts`: their row to `sagas_archive`
    always, their steps and attempts to the archive tables when `keep_steps`, else deleted."""
    if not ids:
        return Moved(0, 0, 0)
    chosen = list(ids)
    one_of = _one_of(conn, chosen)
    conn.execute(sa.insert(sagas_archive).from_select(
        [*(c.name for c in sagas.c), "archived_at", "steps_kept"],
        sa.select(*sagas.c, sa.literal(now, Time), sa.literal(keep_steps, sa.Boolean)).where(one_of(sagas.c.id))))
    if keep_steps:
        conn.execute(sa.insert(saga_steps_archive).from_select(
            [c.name for c in saga_steps.c], sa.select(*saga_steps.c).where(one_of(saga_steps.c.saga_id))))
        conn.execute(sa.insert(step_attempts_archive).from_select(
            [c.name for c in step_attempts.c], sa.select(*step_attempts.c).where(one_of(step_attempts.c.saga_id))))
    attempts = conn.execute(sa.delete(step_attempts).where(one_of(step_attempts.c.saga_id))).rowcount
    steps = conn.execute(sa.delete(saga_steps).where(one_of(saga_steps.c.saga_id))).rowcount
    moved = conn.execute(sa.delete(sagas).where(one_of(sagas.c.id))).rowcount
    return Moved(moved, steps, attempts)


def _one_of(conn: Connection, ids: list[int]) -> Callable[[Any], Any]:
    """`column = ANY(:ids)` on PostgreSQL (one array parameter: a thousand ids are not a thousand parameters to
    send and plan), `column IN (...)` elsewhere."""
    if conn.dialect.name == "postgresql":
        array = sa.bindparam("ids", ids, type_=postgresql.ARRAY(sa.Integer))
        return lambda column: column == sa.any_(array)
    return lambda column: column.in_(ids)


def archived_saga(conn: Connection, saga_id: int) -> Any:
    """The archived row of a saga retention moved out, or None."""
    return conn.execute(sa.select(sagas_archive).where(sagas_archive.c.id == saga_id)).first()
