"""Reading and writing orders, sagas and their steps. Every function takes an open connection (a transaction)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from domain.model import Book, Order, OrderStatus, utcnow
from infra.tables import (
    books,
    customer_orders,
    deliveries,
    notifications,
    orders,
    payments,
    saga_steps,
    sagas,
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


def get_book(conn: Connection, book_id: int) -> Book | None:
    row = conn.execute(sa.select(books).where(books.c.id == book_id)).first()
    return Book(row.id, row.title, row.price_cents) if row else None


# --- orders ------------------------------------------------------------------------------------------------------
def _order_from_row(row: Any) -> Order:
    return Order(
        id=row.id, customer_id=row.customer_id, book_id=row.book_id, qty=row.qty, amount_cents=row.amount_cents,
        status=OrderStatus(row.status), reason=row.reason, created_at=row.created_at, updated_at=row.updated_at,
    )


def add_order(conn: Connection, order: Order, title: str, idempotency_key: str | None) -> int:
    """Insert the order and its read-model row (linked to its saga by create_saga); returns the new id."""
    values = {
        "customer_id": order.customer_id, "book_id": order.book_id, "qty": order.qty,
        "amount_cents": order.amount_cents, "status": order.status.value, "idempotency_key": idempotency_key,
        "created_at": order.created_at, "updated_at": order.updated_at,
    }
    order_id: int = conn.execute(orders.insert().values(values).returning(orders.c.id)).scalar_one()
    order.id = order_id
    conn.execute(customer_orders.insert().values(
        order_id=order_id, customer_id=order.customer_id, book_id=order.book_id, title=title, qty=order.qty,
        amount_cents=order.amount_cents, status=order.status.value, created_at=order.created_at,
        updated_at=order.updated_at,
    ))
    return order_id


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


def order_context(conn: Connection, order_id: int) -> OrderContext | None:
    """The order, its book's title and its charge and shipment references, in one round trip."""
    query = (
        sa.select(orders, books.c.title, payments.c.charge_ref, deliveries.c.shipment_ref)
        .join(books, books.c.id == orders.c.book_id)
        .outerjoin(payments, payments.c.order_id == orders.c.id)
        .outerjoin(deliveries, deliveries.c.order_id == orders.c.id)
        .where(orders.c.id == order_id)
    )
    row = conn.execute(query).first()
    if row is None:
        return None
    return OrderContext(_order_from_row(row), row.title, row.charge_ref, row.shipment_ref)


def find_order_by_key(conn: Connection, key: str) -> Order | None:
    row = conn.execute(sa.select(orders).where(orders.c.idempotency_key == key)).first()
    return _order_from_row(row) if row else None


def save_order_status(conn: Connection, order: Order) -> None:
    """Write the order's status and reason, and the customer's read model with it."""
    assert order.id is not None
    conn.execute(orders.update().where(orders.c.id == order.id).values(
        status=order.status.value, reason=order.reason, updated_at=order.updated_at))
    conn.execute(customer_orders.update().where(customer_orders.c.order_id == order.id).values(
        status=order.status.value, updated_at=order.updated_at))


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
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table).values({**key, **values, **(insert_only or {})})
    conn.execute(statement.on_conflict_do_update(index_elements=list(key), set_=values))


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
@dataclass
class SagaRecord:
    """A saga row with its steps, as the orchestrator and the executor need it."""

    id: int
    kind: str
    order_id: int
    status: SagaStatus
    cancel_requested: bool
    reason: str | None
    steps: dict[str, Any]

    def state(self) -> SagaState:
        return SagaState(
            status=self.status,
            cancel_requested=self.cancel_requested,
            steps={
                name: StepState(name, StepStatus(row.status), row.attempts, row.waited_s, row.outcome_unknown)
                for name, row in self.steps.items()
            },
        )


def create_saga(conn: Connection, definition: SagaDefinition, order_id: int, now: datetime,
                read_model: bool = True) -> int:
    """Insert a RUNNING saga with a PENDING row for each forward step (read_model: link it on "my page")."""
    saga_id: int = conn.execute(sagas.insert().values(
        kind=definition.kind, version=definition.version, order_id=order_id, status=SagaStatus.RUNNING.value,
        cancel_requested=False, recoveries=0, created_at=now, updated_at=now,
    ).returning(sagas.c.id)).scalar_one()
    conn.execute(saga_steps.insert(), [
        _step_row(saga_id, position, step.name, step.retry.max_attempts, now)
        for position, step in enumerate(definition.steps)
    ])
    if read_model:
        conn.execute(customer_orders.update().where(customer_orders.c.order_id == order_id).values(saga_id=saga_id))
    return saga_id


def _step_row(saga_id: int, position: int, name: str, max_attempts: int, now: datetime) -> dict[str, Any]:
    return {
        "saga_id": saga_id, "name": name, "position": position, "status": StepStatus.PENDING.value, "attempts": 0,
        "max_attempts": max_attempts, "created_at": now, "waited_s": 0.0,
    }


def load_saga(conn: Connection, saga_id: int, lock: bool = False) -> SagaRecord | None:
    """The saga and its steps; lock=True holds the saga row until the transaction ends (PostgreSQL)."""
    query = sa.select(sagas).where(sagas.c.id == saga_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        return None
    steps = conn.execute(
        sa.select(saga_steps).where(saga_steps.c.saga_id == saga_id).order_by(saga_steps.c.position)
    ).all()
    return SagaRecord(
        id=row.id, kind=row.kind, order_id=row.order_id, status=SagaStatus(row.status),
        cancel_requested=row.cancel_requested, reason=row.reason, steps={s.name: s for s in steps},
    )


def saga_row(conn: Connection, saga_id: int, lock: bool = False) -> Any:
    """The saga row; lock=True holds it until the transaction ends, serializing claim, record and cancel."""
    query = sa.select(sagas).where(sagas.c.id == saga_id)
    return conn.execute(query.with_for_update() if lock else query).first()


def saga_step_rows(conn: Connection, saga_id: int) -> Sequence[Any]:
    return conn.execute(
        sa.select(saga_steps).where(saga_steps.c.saga_id == saga_id).order_by(saga_steps.c.position)
    ).all()


def sagas_of_order(conn: Connection, order_id: int) -> Sequence[Any]:
    return conn.execute(sa.select(sagas).where(sagas.c.order_id == order_id).order_by(sagas.c.id)).all()


def _step_where(saga_id: int, name: str) -> Any:
    return sa.and_(saga_steps.c.saga_id == saga_id, saga_steps.c.name == name)


def claim_step(conn: Connection, saga_id: int, name: str, lease_s: float, task_id: str | None) -> int | None:
    """Compare-and-set PENDING|WAITING -> RUNNING; returns the attempt number, or None if someone else has it."""
    now = utcnow()
    result = conn.execute(
        saga_steps.update()
        .where(_step_where(saga_id, name), saga_steps.c.status.in_(OPEN_FOR_CLAIM))
        .where(saga_steps.c.attempts < saga_steps.c.max_attempts)
        .values(status=StepStatus.RUNNING.value, attempts=saga_steps.c.attempts + 1, started_at=now,
                lease_until=now + timedelta(seconds=lease_s), task_id=task_id, dispatched_at=None)
        .returning(saga_steps.c.attempts)
    ).first()
    return int(result[0]) if result else None


def close_step(conn: Connection, saga_id: int, name: str, attempt: int, values: dict[str, Any]) -> bool:
    """Write the outcome of attempt `attempt` if the step is still RUNNING it (a lease may have been taken back)."""
    result = conn.execute(
        saga_steps.update()
        .where(_step_where(saga_id, name), saga_steps.c.status == StepStatus.RUNNING.value,
               saga_steps.c.attempts == attempt)
        .values(lease_until=None, **values)
    )
    return result.rowcount == 1


def update_step(conn: Connection, saga_id: int, name: str, **values: Any) -> None:
    conn.execute(saga_steps.update().where(_step_where(saga_id, name)).values(**values))


def open_step(conn: Connection, saga_id: int, name: str, position: int, max_attempts: int,
              available_at: datetime, dispatch_now: bool) -> None:
    """Make step `name` PENDING and due at available_at (inserting its row for a first compensation)."""
    values: dict[str, Any] = {"status": StepStatus.PENDING.value, "available_at": available_at,
                              "dispatched_at": utcnow() if dispatch_now else None, "finished_at": None}
    if conn.execute(saga_steps.update().where(_step_where(saga_id, name)).values(values)).rowcount == 0:
        conn.execute(saga_steps.insert().values({**_step_row(saga_id, position, name, max_attempts, utcnow()),
                                                 **values}))


def skip_open_steps(conn: Connection, saga_id: int, now: datetime) -> None:
    """Steps that will never run now are SKIPPED, so a late message for them finds nothing to claim."""
    conn.execute(
        saga_steps.update()
        .where(saga_steps.c.saga_id == saga_id, saga_steps.c.status.in_(OPEN_FOR_CLAIM))
        .values(status=StepStatus.SKIPPED.value, finished_at=now, available_at=None, dispatched_at=None)
    )


def update_saga(conn: Connection, saga_id: int, **values: Any) -> None:
    values.setdefault("updated_at", utcnow())
    conn.execute(sagas.update().where(sagas.c.id == saga_id).values(**values))


def clear_dispatch(conn: Connection, keys: Sequence[tuple[int, str]]) -> None:
    """Publishing failed for these steps: leave them for the sweeper to send."""
    for saga_id, name in keys:
        conn.execute(saga_steps.update().where(_step_where(saga_id, name),
                                               saga_steps.c.status.in_(OPEN_FOR_CLAIM)).values(dispatched_at=None))


def due_dispatches(conn: Connection, now: datetime, stale_before: datetime, limit: int) -> list[tuple[int, str]]:
    """Open steps that are due and were never sent, or were sent long ago and still not claimed."""
    rows = conn.execute(
        sa.select(saga_steps.c.saga_id, saga_steps.c.name)
        .where(saga_steps.c.status.in_(OPEN_FOR_CLAIM), saga_steps.c.available_at <= now)
        .where(sa.or_(saga_steps.c.dispatched_at.is_(None), saga_steps.c.dispatched_at < stale_before))
        .order_by(saga_steps.c.available_at).limit(limit)
        .with_for_update(skip_locked=True)  # concurrent sweepers take different rows (PostgreSQL)
    ).all()
    return [(r.saga_id, r.name) for r in rows]


def mark_dispatched(conn: Connection, keys: Sequence[tuple[int, str]], now: datetime) -> None:
    for saga_id, name in keys:
        conn.execute(saga_steps.update().where(_step_where(saga_id, name)).values(dispatched_at=now))


def count_open_steps(conn: Connection, name: str, limit: int) -> int:
    """How many steps called `name` are open (pending, waiting or running), counting no further than limit."""
    open_steps = (
        sa.select(saga_steps.c.saga_id)
        .where(saga_steps.c.name == name, saga_steps.c.status.in_(OPEN_FOR_CLAIM + (StepStatus.RUNNING.value,)))
        .limit(limit)
        .subquery()
    )
    return int(conn.execute(sa.select(sa.func.count()).select_from(open_steps)).scalar_one())


def expired_leases(conn: Connection, now: datetime, limit: int) -> list[tuple[int, str]]:
    """Steps RUNNING past their lease: their worker died or hung."""
    rows = conn.execute(
        sa.select(saga_steps.c.saga_id, saga_steps.c.name)
        .where(saga_steps.c.status == StepStatus.RUNNING.value, saga_steps.c.lease_until < now)
        .limit(limit)
    ).all()
    return [(r.saga_id, r.name) for r in rows]
