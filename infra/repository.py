"""Reading and writing orders, sagas and their steps. Every function takes an open connection (a transaction).

The statements a saga's steps run on every order are built once, at import, with bound parameters: SQLAlchemy
then finds their compiled form by identity instead of building and hashing a new statement tree on each call.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from domain.model import Book, Order, OrderStatus, utcnow
from infra.fastsql import FastStatement
from infra.tables import (
    books,
    customer_orders,
    deliveries,
    notifications,
    orders,
    payments,
    saga_steps,
    sagas,
    sagas_archive,
    status_in,
    step_attempts,
)
from saga.definition import SagaDefinition
from saga.orchestrator import SagaState, SagaStatus, StepState, StepStatus

OPEN_FOR_CLAIM = (StepStatus.PENDING.value, StepStatus.WAITING.value)


# --- books -------------------------------------------------------------------------------------------------------
def seed_books(conn: Connection, seed: Iterable[Book]) -> None:
    """Insert the seed books that are missing."""
    present = set(conn.scalars(sa.select(books.c.id)))
    rows = [{"id": b.id, "title": b.title, "price_cents": b.price_cents} for b in seed if b.id not in present]
    if rows:
        conn.execute(books.insert(), rows)


def list_books(conn: Connection) -> list[Book]:
    return [Book(r.id, r.title, r.price_cents) for r in conn.execute(sa.select(books).order_by(books.c.id))]


_GET_BOOK = FastStatement(sa.select(books).where(books.c.id == sa.bindparam("b_id")))


def get_book(conn: Connection, book_id: int) -> Book | None:
    row = _GET_BOOK.run(conn, {"b_id": book_id}).first()
    return Book(row.id, row.title, row.price_cents) if row else None


# --- orders ------------------------------------------------------------------------------------------------------
def _order_from_row(row: Any) -> Order:
    return Order(
        id=row.id, customer_id=row.customer_id, book_id=row.book_id, qty=row.qty, amount_cents=row.amount_cents,
        status=OrderStatus(row.status), reason=row.reason, created_at=row.created_at, updated_at=row.updated_at,
    )


def add_order(conn: Connection, order: Order, idempotency_key: str | None, scope: str = "") -> int:
    """Insert the order, with the caller's Idempotency-Key in the caller's scope; returns the new id
    (add_customer_order writes its read-model row once its saga exists)."""
    values = {
        "customer_id": order.customer_id, "book_id": order.book_id, "qty": order.qty,
        "amount_cents": order.amount_cents, "status": order.status.value, "idempotency_key": idempotency_key,
        "idempotency_scope": scope if idempotency_key else None,
        "created_at": order.created_at, "updated_at": order.updated_at,
    }
    order_id: int = conn.execute(_INSERT_ORDER, values).scalar_one()
    order.id = order_id
    return order_id


_INSERT_ORDER = orders.insert().returning(orders.c.id)


@dataclass(frozen=True)
class PlacedRow:
    order_id: int
    saga_id: int
    title: str
    amount_cents: int


def place_order_at_once(conn: Connection, definition: SagaDefinition, order: Order, idempotency_key: str | None,
                        scope: str, now: datetime, dispatched: str) -> PlacedRow | None:
    """PostgreSQL: the order, its saga, a row per forward step (`dispatched` due now and marked sent) and its
    read-model row in ONE statement (data-modifying CTEs), priced from the book in the same statement; None when
    the book does not exist. Run on an autocommit connection it is one round trip and atomic by itself; on SQLite
    the same rows are written by add_order, create_saga and add_customer_order (the same tests cover both)."""
    row = _place_statement(definition, dispatched).run(conn, {
        "p_customer": order.customer_id, "p_book": order.book_id, "p_qty": order.qty,
        "p_status": order.status.value, "p_key": idempotency_key, "p_scope": scope if idempotency_key else None,
        "p_now": now,
        "p_order_created": order.created_at, "p_order_updated": order.updated_at,
    }).first()
    return PlacedRow(row.order_id, row.saga_id, row.title, row.amount_cents) if row else None


# by definition (its id, with the definition kept so the id is not reused) and first step
_PLACE_STATEMENTS: dict[tuple[int, str], tuple[SagaDefinition, FastStatement]] = {}


def _place_statement(definition: SagaDefinition, dispatched: str) -> FastStatement:
    known = _PLACE_STATEMENTS.get((id(definition), dispatched))
    if known is None or known[0] is not definition:
        known = _PLACE_STATEMENTS[(id(definition), dispatched)] = (
            definition, _build_place_statement(definition, dispatched))
    return known[1]


def _build_place_statement(definition: SagaDefinition, dispatched: str) -> FastStatement:
    steps = ", ".join(f"(:n{i}, {i}, :m{i}, :d{i})" for i in range(len(definition.steps)))
    params: dict[str, Any] = {"p_kind": definition.kind, "p_version": definition.version,
                              "p_running": SagaStatus.RUNNING.value, "p_pending": StepStatus.PENDING.value}
    for i, step in enumerate(definition.steps):
        params.update({f"n{i}": step.name, f"m{i}": step.retry.max_attempts, f"d{i}": step.name == dispatched})
    sql = f"""
WITH b AS (SELECT id, title, price_cents FROM books WHERE id = :p_book),
o AS (INSERT INTO orders (customer_id, book_id, qty, amount_cents, status, idempotency_key, idempotency_scope,
                         created_at, updated_at)
      SELECT :p_customer, b.id, :p_qty, b.price_cents * :p_qty, :p_status, :p_key, :p_scope, :p_order_created,
             :p_order_updated FROM b
      RETURNING id, amount_cents),
s AS (INSERT INTO sagas (kind, version, order_id, status, cancel_requested, recoveries, created_at, updated_at)
      SELECT :p_kind, :p_version, o.id, :p_running, false, 0, :p_now, :p_now FROM o
      RETURNING id),
st AS (INSERT INTO saga_steps (saga_id, name, position, status, attempts, max_attempts, created_at, waited_s,
                               available_at, dispatched_at)
       SELECT s.id, v.name, v.position, :p_pending, 0, v.max_attempts, :p_now, 0,
              CASE WHEN v.due THEN CAST(:p_now AS timestamptz) END, CASE WHEN v.due THEN CAST(:p_now AS timestamptz) END
       FROM s, (VALUES {steps}) AS v (name, position, max_attempts, due)),
c AS (INSERT INTO customer_orders (order_id, customer_id, book_id, title, qty, amount_cents, status, saga_id,
                                   created_at, updated_at)
      SELECT o.id, :p_customer, b.id, b.title, :p_qty, o.amount_cents, :p_status, s.id, :p_order_created,
             :p_order_updated FROM o, s, b)
SELECT o.id AS order_id, s.id AS saga_id, b.title, o.amount_cents FROM o, s, b"""
    return FastStatement(sa.text(sql).bindparams(**params))


def add_customer_order(conn: Connection, order: Order, title: str, saga_id: int) -> None:
    """The order's row in the customer's read model ("my orders"), linked to its saga."""
    conn.execute(customer_orders.insert(), {
        "order_id": order.id, "customer_id": order.customer_id, "book_id": order.book_id, "title": title,
        "qty": order.qty, "amount_cents": order.amount_cents, "status": order.status.value, "saga_id": saga_id,
        "created_at": order.created_at, "updated_at": order.updated_at,
    })


def get_order(conn: Connection, order_id: int, lock: bool = False) -> Order | None:
    query = sa.select(orders).where(orders.c.id == order_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    return _order_from_row(row) if row else None


@dataclass(frozen=True)
class OrderContext:
    """An order with what its steps need: the book's title and the provider references so far."""

    order: Order
    title: str
    charge_ref: str | None
    shipment_ref: str | None


def _context_query() -> Any:
    return (
        sa.select(orders, books.c.title, payments.c.charge_ref, deliveries.c.shipment_ref)
        .join(books, books.c.id == orders.c.book_id)
        .outerjoin(payments, payments.c.order_id == orders.c.id)
        .outerjoin(deliveries, deliveries.c.order_id == orders.c.id)
    )


def _context_from_row(row: Any) -> OrderContext:
    return OrderContext(_order_from_row(row), row.title, row.charge_ref, row.shipment_ref)


_LOCKED_SAGA_CONTEXT = FastStatement(
    _context_query().add_columns(sagas.c.kind.label("saga_kind"), sagas.c.status.label("saga_status"),
                                 sagas.c.cancel_requested.label("saga_cancel_requested"))
    .join(sagas, sagas.c.order_id == orders.c.id)
    .where(sagas.c.id == sa.bindparam("b_saga"))
    .with_for_update(of=sagas)
)


@dataclass(frozen=True)
class ClaimContext:
    """What a claim reads under the saga lock: the saga's kind, status and cancel flag, and its order's context."""

    kind: str
    status: str
    cancel_requested: bool
    context: OrderContext


def locked_saga_context(conn: Connection, saga_id: int) -> ClaimContext | None:
    """The saga with its order's context, in one round trip; holds the saga row until the transaction ends
    (PostgreSQL), which serializes claim, record and cancel. (The claim itself is a statement of its own, so it
    sees the steps as they are once the lock is held.)"""
    row = _LOCKED_SAGA_CONTEXT.run(conn, {"b_saga": saga_id}).first()
    if row is None:
        return None
    return ClaimContext(row.saga_kind, row.saga_status, bool(row.saga_cancel_requested), _context_from_row(row))


def find_order_by_key(conn: Connection, scope: str, key: str) -> Order | None:
    """The order this caller (scope) placed with this Idempotency-Key, if the key is still kept."""
    row = conn.execute(sa.select(orders).where(orders.c.idempotency_scope == scope,
                                               orders.c.idempotency_key == key)).first()
    return _order_from_row(row) if row else None


def forget_idempotency_keys(conn: Connection, placed_before: datetime, limit: int) -> int:
    """Forget the Idempotency-Keys of up to `limit` orders placed before `placed_before`, oldest first (the
    orders stay); rows another transaction holds are left for the next pass. Returns how many."""
    kept = (sa.select(orders.c.id)
            .where(orders.c.idempotency_key.is_not(None), orders.c.created_at < placed_before)
            .order_by(orders.c.created_at).limit(limit).with_for_update(skip_locked=True))
    ids = list(conn.execute(kept).scalars())
    if not ids:
        return 0
    conn.execute(sa.update(orders).where(orders.c.id.in_(ids)).values(idempotency_key=None, idempotency_scope=None))
    return len(ids)


def save_order_status(conn: Connection, order: Order) -> None:
    """Write the order's status and reason, and the customer's read model with it (one statement on PostgreSQL)."""
    assert order.id is not None
    params = {"b_id": order.id, "b_status": order.status.value, "b_reason": order.reason,
              "b_updated": order.updated_at}
    if conn.dialect.name == "postgresql":
        _SAVE_ORDER_AND_READ_MODEL.run(conn, params)
        return
    conn.execute(_SAVE_ORDER_STATUS, params)
    conn.execute(_SAVE_CUSTOMER_ORDER_STATUS, params)


_SAVE_ORDER_STATUS = orders.update().where(orders.c.id == sa.bindparam("b_id")).values(
    status=sa.bindparam("b_status"), reason=sa.bindparam("b_reason"), updated_at=sa.bindparam("b_updated"))
_SAVE_CUSTOMER_ORDER_STATUS = customer_orders.update().where(customer_orders.c.order_id == sa.bindparam("b_id")).values(
    status=sa.bindparam("b_status"), updated_at=sa.bindparam("b_updated"))
_saved = _SAVE_ORDER_STATUS.returning(orders.c.id).cte("saved_order")
# WITH saved_order AS (UPDATE orders ... RETURNING id) UPDATE customer_orders ...
_SAVE_ORDER_AND_READ_MODEL = FastStatement(
    customer_orders.update().add_cte(_saved)
    .where(customer_orders.c.order_id.in_(sa.select(_saved.c.id)))
    .values(status=sa.bindparam("b_status"), updated_at=sa.bindparam("b_updated"))
)


def customer_order_page(conn: Connection, customer_id: int, offset: int, limit: int) -> tuple[list[Any], int]:
    """One page of a customer's orders, newest first, and the total count."""
    where = customer_orders.c.customer_id == customer_id
    rows = conn.execute(
        sa.select(customer_orders).where(where).order_by(customer_orders.c.order_id.desc()).offset(offset).limit(limit)
    ).all()
    total = conn.execute(sa.select(sa.func.count()).select_from(customer_orders).where(where)).scalar_one()
    return list(rows), int(total)


# --- provider records --------------------------------------------------------------------------------------------
def upsert(conn: Connection, table: sa.Table, key: dict[str, Any], values: dict[str, Any],
           insert_only: dict[str, Any] | None = None) -> None:
    """Insert the row at `key`, or update it when it exists, in one statement (INSERT ... ON CONFLICT)."""
    statement = _upsert_statement(conn.dialect.name, table, tuple(key), tuple(values), tuple(insert_only or ()))
    statement.run(conn, {**key, **values, **(insert_only or {})})


@functools.lru_cache(maxsize=64)
def _upsert_statement(dialect: str, table: sa.Table, key: tuple[str, ...], values: tuple[str, ...],
                      insert_only: tuple[str, ...]) -> FastStatement:
    columns = key + values + insert_only
    # the Python-side defaults of the columns not given, as values of the statement itself (FastStatement binds
    # what the compiled statement holds; SQLAlchemy would fill them in on each execution)
    defaults = {c.name: c.default.arg for c in table.columns  # type: ignore[attr-defined]
                if c.name not in columns and c.default is not None and c.default.is_scalar}
    assert not any(c.default is not None and c.name not in columns and c.name not in defaults for c in table.columns)
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table).values(
        {**{c: sa.bindparam(c, type_=table.c[c].type) for c in columns}, **defaults})
    return FastStatement(
        insert.on_conflict_do_update(index_elements=list(key), set_={c: insert.excluded[c] for c in values}))


def save_payment(conn: Connection, order_id: int, **values: Any) -> None:
    """Insert or replace the order's payment record (a charge or a decline)."""
    upsert(conn, payments, {"order_id": order_id}, {**values, "updated_at": utcnow()})


def update_payment(conn: Connection, order_id: int, **values: Any) -> None:
    """Change the existing payment record (a refund)."""
    conn.execute(payments.update().where(payments.c.order_id == order_id).values(**values, updated_at=utcnow()))


def save_delivery(conn: Connection, order_id: int, **values: Any) -> None:
    """Insert or replace the order's delivery record (a shipment)."""
    upsert(conn, deliveries, {"order_id": order_id}, {**values, "updated_at": utcnow()})


def update_delivery(conn: Connection, order_id: int, **values: Any) -> None:
    """Change the existing delivery record (a cancellation)."""
    conn.execute(deliveries.update().where(deliveries.c.order_id == order_id).values(**values, updated_at=utcnow()))


def save_notification(conn: Connection, saga_id: int, step: str, **values: Any) -> None:
    now = utcnow()
    upsert(conn, notifications, {"saga_id": saga_id, "step": step}, {**values, "updated_at": now},
           insert_only={"created_at": now})


def notification_page(conn: Connection, customer_id: int | None, offset: int, limit: int) -> tuple[list[Any], int]:
    where = sa.true() if customer_id is None else notifications.c.customer_id == customer_id
    rows = conn.execute(
        sa.select(notifications).where(where).order_by(notifications.c.id.desc()).offset(offset).limit(limit)
    ).all()
    total = conn.execute(sa.select(sa.func.count()).select_from(notifications).where(where)).scalar_one()
    return list(rows), int(total)


# --- sagas -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StepRow:
    """What the orchestrator and the executor read of a step row (not its timestamps, errors or references);
    both database paths (SQLAlchemy and fastsql) return it."""

    name: str
    position: int
    status: str
    attempts: int
    max_attempts: int
    waited_s: float
    outcome_unknown: bool
    lease_until: datetime | None = None

    @property
    def state(self) -> StepState:
        return StepState(self.name, StepStatus(self.status), self.attempts, self.waited_s, self.outcome_unknown)

    def lease_expired(self, now: datetime) -> bool:
        """RUNNING past its lease: the worker running it died or hung."""
        return self.status == StepStatus.RUNNING.value and self.lease_until is not None and self.lease_until < now


@dataclass
class SagaRecord:
    """A saga row with its steps, as the orchestrator and the executor need it."""

    id: int
    kind: str
    order_id: int
    status: SagaStatus
    cancel_requested: bool
    reason: str | None
    steps: dict[str, StepRow]
    created_at: datetime | None = None  # for the saga's duration when it ends

    def state(self) -> SagaState:
        return SagaState(status=self.status, cancel_requested=self.cancel_requested,
                         steps={name: row.state for name, row in self.steps.items()})


def create_saga(conn: Connection, definition: SagaDefinition, order_id: int, now: datetime,
                reason: str | None = None, dispatched: str | None = None) -> SagaRecord:
    """Insert a RUNNING saga with a PENDING row for each forward step; returns it as load_saga would.

    dispatched: the step that starts at once, inserted due now and marked sent (the caller publishes it)."""
    saga_id: int = conn.execute(_INSERT_SAGA, {
        "kind": definition.kind, "version": definition.version, "order_id": order_id,
        "status": SagaStatus.RUNNING.value, "cancel_requested": False, "recoveries": 0, "reason": reason,
        "created_at": now, "updated_at": now,
    }).scalar_one()
    steps = [_step_row(saga_id, position, step.name, step.retry.max_attempts, now)
             for position, step in enumerate(definition.steps)]
    opened = {"available_at": now, "dispatched_at": now}
    conn.execute(saga_steps.insert(), [{**row, **(opened if row["name"] == dispatched else {"available_at": None,
                                                                                           "dispatched_at": None})}
                                       for row in steps])
    return SagaRecord(id=saga_id, kind=definition.kind, order_id=order_id, status=SagaStatus.RUNNING,
                      cancel_requested=False, reason=reason,
                      steps={row["name"]: _new_step(row) for row in steps}, created_at=now)


_INSERT_SAGA = sagas.insert().returning(sagas.c.id)


def _step_from_row(row: Any) -> StepRow:
    """A StepRow from a result row, SQLAlchemy's or psycopg's (the two paths return the same columns)."""
    return StepRow(name=row.name, position=row.position, status=row.status, attempts=row.attempts,
                   max_attempts=row.max_attempts, waited_s=row.waited_s, outcome_unknown=row.outcome_unknown,
                   lease_until=row.lease_until)


def _step_row(saga_id: int, position: int, name: str, max_attempts: int, now: datetime) -> dict[str, Any]:
    return {
        "saga_id": saga_id, "name": name, "position": position, "status": StepStatus.PENDING.value, "attempts": 0,
        "max_attempts": max_attempts, "created_at": now, "waited_s": 0.0,
    }


def _new_step(row: dict[str, Any]) -> StepRow:
    """The StepRow of a row just inserted."""
    return StepRow(name=row["name"], position=row["position"], status=row["status"], attempts=row["attempts"],
                   max_attempts=row["max_attempts"], waited_s=row["waited_s"], outcome_unknown=False)


_SAGA_COLUMNS = (sagas.c.kind.label("saga_kind"), sagas.c.order_id.label("saga_order_id"),
                 sagas.c.status.label("saga_status"), sagas.c.cancel_requested.label("saga_cancel_requested"),
                 sagas.c.reason.label("saga_reason"), sagas.c.created_at.label("saga_created_at"))


# What the orchestrator and the executor read of each step (not its timestamps, errors or references).
_STEP_STATE_COLUMNS = (saga_steps.c.name, saga_steps.c.position, saga_steps.c.status, saga_steps.c.attempts,
                       saga_steps.c.max_attempts, saga_steps.c.waited_s, saga_steps.c.outcome_unknown,
                       saga_steps.c.lease_until)
_LOAD_SAGA_QUERY = (
    sa.select(*_SAGA_COLUMNS, *_STEP_STATE_COLUMNS)
    .select_from(sagas.outerjoin(saga_steps, saga_steps.c.saga_id == sagas.c.id))
    .where(sagas.c.id == sa.bindparam("b_saga"))
    .order_by(saga_steps.c.position)
)
_LOAD_SAGA = FastStatement(_LOAD_SAGA_QUERY)
_LOCK_SAGA = FastStatement(sa.select(sagas.c.id).where(sagas.c.id == sa.bindparam("b_saga")).with_for_update())


def lock_saga(conn: Connection, saga_id: int) -> bool:
    """Hold the saga row until the transaction ends (PostgreSQL): claim, record, cancel and recovery of one saga
    run one at a time. False when there is no such saga."""
    return _LOCK_SAGA.run(conn, {"b_saga": saga_id}).first() is not None


def load_saga(conn: Connection, saga_id: int, lock: bool = False) -> SagaRecord | None:
    """The saga and its steps in one round trip; lock=True first holds the saga row until the transaction ends.

    The lock is its own statement: under READ COMMITTED a statement that waits for a row lock still returns
    the other tables' rows as of its own start, so a load joined to the lock could miss the step changes of the
    transaction it waited for (seen: a cancel that waited for a claim took `pay` for PENDING and ended the saga
    while the charge was being made)."""
    if lock and not lock_saga(conn, saga_id):
        return None
    rows = _LOAD_SAGA.run(conn, {"b_saga": saga_id}).all()
    if not rows:
        return None
    first = rows[0]
    return SagaRecord(
        id=saga_id, kind=first.saga_kind, order_id=first.saga_order_id, status=SagaStatus(first.saga_status),
        cancel_requested=first.saga_cancel_requested, reason=first.saga_reason,
        steps={s.name: _step_from_row(s) for s in rows if s.name is not None}, created_at=first.saga_created_at,
    )


def saga_row(conn: Connection, saga_id: int, lock: bool = False) -> Any:
    """The saga row; lock=True holds it until the transaction ends, serializing claim, record and cancel."""
    query = sa.select(sagas).where(sagas.c.id == saga_id)
    return conn.execute(query.with_for_update() if lock else query).first()


def saga_step_rows(conn: Connection, saga_id: int) -> Sequence[Any]:
    return conn.execute(
        sa.select(saga_steps).where(saga_steps.c.saga_id == saga_id).order_by(saga_steps.c.position)
    ).all()


def saga_attempts(conn: Connection, saga_id: int) -> Sequence[Any]:
    """Every recorded attempt of the saga's provider steps with its step's position, in the order they started."""
    return conn.execute(
        sa.select(step_attempts, saga_steps.c.position)
        .join(saga_steps, sa.and_(saga_steps.c.saga_id == step_attempts.c.saga_id,
                                  saga_steps.c.name == step_attempts.c.step))
        .where(step_attempts.c.saga_id == saga_id)
        .order_by(step_attempts.c.started_at, saga_steps.c.position, step_attempts.c.attempt)
    ).all()


def sagas_of_order(conn: Connection, order_id: int) -> Sequence[Any]:
    """Every saga of the order (id, kind, status), the ones retention archived included, oldest first."""
    live = sa.select(sagas.c.id, sagas.c.kind, sagas.c.status).where(sagas.c.order_id == order_id)
    archived = (sa.select(sagas_archive.c.id, sagas_archive.c.kind, sagas_archive.c.status)
                .where(sagas_archive.c.order_id == order_id))
    both = sa.union_all(live, archived).subquery()
    return conn.execute(sa.select(both).order_by(both.c.id)).all()


def _step_where(saga_id: int, name: str) -> Any:
    return sa.and_(saga_steps.c.saga_id == saga_id, saga_steps.c.name == name)


# status IN (PENDING, WAITING) as two plain comparisons: an IN list is re-rendered on every execution.
_STEP_IS_OPEN = sa.or_(*(saga_steps.c.status == status for status in OPEN_FOR_CLAIM))
_THIS_STEP = sa.and_(saga_steps.c.saga_id == sa.bindparam("b_saga"), saga_steps.c.name == sa.bindparam("b_name"))

# Only a step whose message has been sent since it was (re)opened: a repeated or late message for a step that waits
# for its backoff or its provider's breaker (dispatched_at NULL until the sweeper sends it when due) takes nothing.
_CLAIM_STEP = FastStatement(
    saga_steps.update()
    .where(_THIS_STEP, _STEP_IS_OPEN, saga_steps.c.attempts < saga_steps.c.max_attempts,
           saga_steps.c.dispatched_at.is_not(None))
    .values(status=StepStatus.RUNNING.value, attempts=saga_steps.c.attempts + 1, started_at=sa.bindparam("b_now"),
            lease_until=sa.bindparam("b_lease"), task_id=sa.bindparam("b_task"), dispatched_at=None)
    .returning(saga_steps.c.attempts)
)


def claim_step(conn: Connection, saga_id: int, name: str, now: datetime, lease_s: float,
               task_id: str | None) -> int | None:
    """Compare-and-set PENDING|WAITING (and sent) -> RUNNING; returns the attempt number, or None if someone else
    has it or it is not due (a repeated message)."""
    result = _CLAIM_STEP.run(conn, {"b_saga": saga_id, "b_name": name, "b_now": now,
                                    "b_lease": now + timedelta(seconds=lease_s), "b_task": task_id}).first()
    return int(result[0]) if result else None


# PostgreSQL: lock the saga, claim the step when the saga is in a phase the step runs in, and read the order's
# context, in ONE statement (run on an autocommit connection: one round trip, the lock held for the statement).
# The saga row comes back as it is once locked; the step's UPDATE rechecks a row changed meanwhile against its
# newest version (PostgreSQL's EvalPlanQual), so a step the lock holder moved on is not claimed.
_CLAIM_AT_ONCE = FastStatement(sa.text(f"""
WITH s AS (SELECT id, kind, status, cancel_requested, order_id FROM sagas WHERE id = :b_saga FOR UPDATE),
c AS (UPDATE saga_steps SET status = '{StepStatus.RUNNING.value}', attempts = saga_steps.attempts + 1,
             started_at = :b_now, lease_until = :b_lease, task_id = :b_task, dispatched_at = NULL
      FROM s
      WHERE saga_steps.saga_id = s.id AND saga_steps.name = :b_name
        AND saga_steps.status IN ({", ".join(f"'{status}'" for status in OPEN_FOR_CLAIM)})
        AND saga_steps.attempts < saga_steps.max_attempts AND saga_steps.dispatched_at IS NOT NULL
        AND (s.kind || ':' || s.status) = ANY(:b_phases)
      RETURNING saga_steps.attempts)
SELECT orders.*, books.title, payments.charge_ref, deliveries.shipment_ref, s.kind AS saga_kind,
       s.status AS saga_status, s.cancel_requested AS saga_cancel_requested, (SELECT attempts FROM c) AS claimed
FROM s JOIN orders ON orders.id = s.order_id JOIN books ON books.id = orders.book_id
     LEFT JOIN payments ON payments.order_id = orders.id LEFT JOIN deliveries ON deliveries.order_id = orders.id
"""))


def claim_at_once(conn: Connection, saga_id: int, name: str, now: datetime, lease_s: float, task_id: str | None,
                  phases: Sequence[str]) -> tuple[ClaimContext, int | None] | None:
    """PostgreSQL: locked_saga_context and claim_step in one statement. phases: "kind:status" of the sagas the
    step may run in (its definition's kind and the phase the step belongs to). None when there is no such saga;
    otherwise what locked_saga_context reads and the attempt number, or None when the step was not claimed."""
    row = _CLAIM_AT_ONCE.run(conn, {"b_saga": saga_id, "b_name": name, "b_now": now,
                                    "b_lease": now + timedelta(seconds=lease_s), "b_task": task_id,
                                    "b_phases": list(phases)}).first()
    if row is None:
        return None
    found = ClaimContext(row.saga_kind, row.saga_status, bool(row.saga_cancel_requested), _context_from_row(row))
    return found, (int(row.claimed) if row.claimed is not None else None)


_CLOSE_STEP_UPDATE = (
    saga_steps.update()
    .where(_THIS_STEP, saga_steps.c.status == StepStatus.RUNNING.value,
           saga_steps.c.attempts == sa.bindparam("b_attempt"))
    .values(status=sa.bindparam("b_status"), finished_at=sa.bindparam("b_finished"), error=sa.bindparam("b_error"),
            lease_until=None,
            provider_ref=sa.func.coalesce(sa.bindparam("b_ref", type_=sa.String), saga_steps.c.provider_ref),
            outcome_unknown=sa.func.coalesce(sa.bindparam("b_unknown", type_=sa.Boolean),
                                             saga_steps.c.outcome_unknown))
)
# An attempt row: what the closed step row says of the attempt, then what is the attempt's own (its outcome, the
# reference its answer carried, whether that answer may hide an effect), not the step's carried-over values.
_CLOSED_COLUMNS = (saga_steps.c.saga_id, saga_steps.c.name, saga_steps.c.attempts, saga_steps.c.started_at,
                   saga_steps.c.finished_at, saga_steps.c.error, saga_steps.c.task_id)
_ATTEMPT_OWN_COLUMNS = (sa.bindparam("b_outcome", type_=sa.String), sa.bindparam("b_ref", type_=sa.String),
                        sa.func.coalesce(sa.bindparam("b_unknown", type_=sa.Boolean), sa.false()))
_ATTEMPT_COLUMNS = ("saga_id", "step", "attempt", "started_at", "finished_at", "error", "task_id",
                    "outcome", "provider_ref", "outcome_unknown")
_closed = _CLOSE_STEP_UPDATE.returning(*_CLOSED_COLUMNS).cte("closed")
# WITH closed AS (UPDATE saga_steps ... RETURNING ...) INSERT INTO step_attempts SELECT ... FROM closed: one round
# trip, and one row inserted exactly when the close matched (PostgreSQL; SQLite has no DML in a CTE).
_CLOSE_STEP_AND_RECORD_ATTEMPT = FastStatement(
    step_attempts.insert().from_select(list(_ATTEMPT_COLUMNS), sa.select(*_closed.c, *_ATTEMPT_OWN_COLUMNS))
)
_CLOSE_STEP = FastStatement(_CLOSE_STEP_UPDATE.returning(*_CLOSED_COLUMNS))
_INSERT_ATTEMPT = step_attempts.insert()


def close_step(conn: Connection, saga_id: int, name: str, attempt: int, status: str, finished_at: datetime,
               error: str | None, provider_ref: str | None = None, outcome_unknown: bool | None = None,
               attempt_outcome: str | None = None) -> bool:
    """Write the outcome of attempt `attempt` if the step is still RUNNING it (a lease may have been taken back),
    and keep the attempt in step_attempts, its outcome `attempt_outcome` (default: `status`).

    provider_ref and outcome_unknown are left as they are on the step when None."""
    params = {
        "b_saga": saga_id, "b_name": name, "b_attempt": attempt, "b_status": status, "b_finished": finished_at,
        "b_error": error, "b_ref": provider_ref, "b_unknown": outcome_unknown, "b_outcome": attempt_outcome or status,
    }
    if conn.dialect.name == "postgresql":
        return _CLOSE_STEP_AND_RECORD_ATTEMPT.run(conn, params).rowcount == 1
    closed = _CLOSE_STEP.run(conn, params).first()
    if closed is None:
        return False
    own = (params["b_outcome"], provider_ref, bool(outcome_unknown))
    conn.execute(_INSERT_ATTEMPT, dict(zip(_ATTEMPT_COLUMNS, (*closed, *own), strict=True)))
    return True


_FINISH_LOCAL_STEP = FastStatement(saga_steps.update().where(_THIS_STEP).values(
    status=sa.bindparam("b_status"), attempts=sa.bindparam("b_attempts"), started_at=sa.bindparam("b_now"),
    finished_at=sa.bindparam("b_now"), error=sa.bindparam("b_error")))


def finish_local_step(conn: Connection, saga_id: int, name: str, status: str, attempts: int, now: datetime,
                      error: str | None) -> None:
    """Record a local step (one that calls no provider), which starts and ends within one transaction."""
    _FINISH_LOCAL_STEP.run(conn, {"b_saga": saga_id, "b_name": name, "b_status": status,
                                  "b_attempts": attempts, "b_now": now, "b_error": error})


def update_step(conn: Connection, saga_id: int, name: str, **values: Any) -> None:
    conn.execute(saga_steps.update().where(_step_where(saga_id, name)).values(**values))


_OPEN_STEP = FastStatement(saga_steps.update().where(_THIS_STEP).values(
    status=StepStatus.PENDING.value, available_at=sa.bindparam("b_available"),
    dispatched_at=sa.bindparam("b_dispatched"), finished_at=None))


_OPEN_CLAIMED_STEP = FastStatement(
    saga_steps.update().where(_THIS_STEP)
    .values(status=StepStatus.RUNNING.value, attempts=saga_steps.c.attempts + 1, started_at=sa.bindparam("b_now"),
            lease_until=sa.bindparam("b_lease"), task_id=sa.bindparam("b_task"), available_at=sa.bindparam("b_now"),
            dispatched_at=None, finished_at=None)
    .returning(saga_steps.c.attempts)
)


def open_claimed_step(conn: Connection, saga_id: int, name: str, position: int, max_attempts: int, now: datetime,
                      lease_s: float, task_id: str | None) -> int:
    """Open step `name` already claimed by the caller (RUNNING, leased): its saga is locked by this transaction,
    which has just decided to run it; returns the attempt number."""
    params = {"b_saga": saga_id, "b_name": name, "b_now": now, "b_lease": now + timedelta(seconds=lease_s),
              "b_task": task_id}
    row = _OPEN_CLAIMED_STEP.run(conn, params).first()
    if row is not None:
        return int(row[0])
    conn.execute(saga_steps.insert(), {**_step_row(saga_id, position, name, max_attempts, now),
                                       "status": StepStatus.RUNNING.value, "attempts": 1, "started_at": now,
                                       "lease_until": params["b_lease"], "task_id": task_id, "available_at": now})
    return 1


def open_step(conn: Connection, saga_id: int, name: str, position: int, max_attempts: int,
              available_at: datetime, dispatched_at: datetime | None) -> None:
    """Make step `name` PENDING and due at available_at, sent at dispatched_at when the caller publishes it now
    (inserting its row for a first compensation)."""
    params = {"b_saga": saga_id, "b_name": name, "b_available": available_at, "b_dispatched": dispatched_at}
    if _OPEN_STEP.run(conn, params).rowcount == 0:
        conn.execute(saga_steps.insert(), {**_step_row(saga_id, position, name, max_attempts, available_at),
                                           "status": StepStatus.PENDING.value, "available_at": available_at,
                                           "dispatched_at": dispatched_at, "finished_at": None})


_SKIP_OPEN_STEPS = FastStatement(
    saga_steps.update()
    .where(saga_steps.c.saga_id == sa.bindparam("b_saga"), _STEP_IS_OPEN)
    .values(status=StepStatus.SKIPPED.value, finished_at=sa.bindparam("b_now"), available_at=None,
            dispatched_at=None)
)


def skip_open_steps(conn: Connection, saga_id: int, now: datetime) -> None:
    """Steps that will never run now are SKIPPED, so a late message for them finds nothing to claim."""
    _SKIP_OPEN_STEPS.run(conn, {"b_saga": saga_id, "b_now": now})


def update_saga(conn: Connection, saga_id: int, **values: Any) -> None:
    values.setdefault("updated_at", utcnow())
    _update_saga_statement(tuple(values)).run(conn, {"b_saga": saga_id, **{f"v_{k}": v for k, v in values.items()}})


@functools.lru_cache(maxsize=64)
def _update_saga_statement(columns: tuple[str, ...]) -> FastStatement:
    return FastStatement(sagas.update().where(sagas.c.id == sa.bindparam("b_saga")).values(
        {c: sa.bindparam(f"v_{c}", type_=sagas.c[c].type) for c in columns}))


def clear_dispatch(conn: Connection, keys: Sequence[tuple[int, str]]) -> None:
    """Publishing failed for these steps: leave them for the sweeper to send."""
    for saga_id, name in keys:
        conn.execute(saga_steps.update().where(_step_where(saga_id, name),
                                               saga_steps.c.status.in_(OPEN_FOR_CLAIM)).values(dispatched_at=None))


def due_dispatches(conn: Connection, now: datetime, stale_before: datetime, limit: int) -> list[tuple[int, str]]:
    """Open steps that are due and were never sent, or were sent long ago and still not claimed."""
    rows = conn.execute(
        sa.select(saga_steps.c.saga_id, saga_steps.c.name)
        .where(status_in(saga_steps.c.status, *OPEN_FOR_CLAIM), saga_steps.c.available_at <= now)
        .where(sa.or_(saga_steps.c.dispatched_at.is_(None), saga_steps.c.dispatched_at < stale_before))
        .order_by(saga_steps.c.available_at).limit(limit)
        .with_for_update(skip_locked=True)  # concurrent sweepers take different rows (PostgreSQL)
    ).all()
    return [(r.saga_id, r.name) for r in rows]


def orders_of_sagas(conn: Connection, saga_ids: Iterable[int]) -> dict[int, int]:
    """saga id -> its order's id."""
    rows = conn.execute(sa.select(sagas.c.id, sagas.c.order_id).where(sagas.c.id.in_(list(saga_ids))))
    return {r.id: r.order_id for r in rows}


def mark_dispatched(conn: Connection, keys: Sequence[tuple[int, str]], now: datetime) -> None:
    for saga_id, name in keys:
        conn.execute(saga_steps.update().where(_step_where(saga_id, name)).values(dispatched_at=now))


def count_open_steps(conn: Connection, name: str, limit: int) -> int:
    """How many steps called `name` are open (pending, waiting or running), counting no further than limit."""
    open_steps = (
        sa.select(saga_steps.c.saga_id)
        .where(saga_steps.c.name == name, status_in(saga_steps.c.status, *OPEN_FOR_CLAIM, StepStatus.RUNNING.value))
        .limit(limit)
        .subquery()
    )
    return int(conn.execute(sa.select(sa.func.count()).select_from(open_steps)).scalar_one())


def count_finished_steps(conn: Connection, name: str, since: datetime) -> int:
    """How many steps called `name` ended (any outcome) at or after `since`."""
    return int(conn.execute(
        sa.select(sa.func.count()).select_from(saga_steps)
        .where(saga_steps.c.name == name, saga_steps.c.finished_at >= since)
    ).scalar_one())


def expired_leases(conn: Connection, now: datetime, limit: int) -> list[tuple[int, str]]:
    """Steps RUNNING past their lease: their worker died or hung."""
    rows = conn.execute(
        sa.select(saga_steps.c.saga_id, saga_steps.c.name)
        .where(status_in(saga_steps.c.status, StepStatus.RUNNING.value), saga_steps.c.lease_until < now)
        .limit(limit)
    ).all()
    return [(r.saga_id, r.name) for r in rows]


def count_sagas_by_status(conn: Connection, statuses: Sequence[str]) -> list[tuple[str, str, int]]:
    """(kind, status, how many) of the sagas in `statuses` (active or parked ones), read from the partial
    index of those states alone."""
    rows = conn.execute(
        sa.select(sagas.c.kind, sagas.c.status, sa.func.count())
        .where(status_in(sagas.c.status, *statuses)).group_by(sagas.c.status, sagas.c.kind)
    ).all()
    return [(r[0], r[1], int(r[2])) for r in rows]


def count_waiting_sagas(conn: Connection, limit: int) -> int:
    """Sagas with a step WAITING for its provider (a breaker open, a bulkhead full, a backoff), up to limit."""
    waiting = (sa.select(saga_steps.c.saga_id).where(status_in(saga_steps.c.status, StepStatus.WAITING.value))
               .distinct().limit(limit).subquery())
    return int(conn.execute(sa.select(sa.func.count()).select_from(waiting)).scalar_one())


def count_stuck_steps(conn: Connection, now: datetime, due_before: datetime, limit: int) -> dict[str, int]:
    """Steps RUNNING past their lease, and steps due before `due_before` that no worker has started, up to limit
    each (each read through its partial index)."""
    def bounded(query: sa.Select[Any]) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(query.limit(limit).subquery())).scalar_one())

    steps = sa.select(saga_steps.c.saga_id)
    return {
        "lease_expired": bounded(steps.where(status_in(saga_steps.c.status, StepStatus.RUNNING.value),
                                             saga_steps.c.lease_until < now)),
        "not_started": bounded(steps.where(status_in(saga_steps.c.status, *OPEN_FOR_CLAIM),
                                           saga_steps.c.available_at < due_before)),
    }
