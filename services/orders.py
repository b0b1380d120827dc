"""Placing orders and reading them back: the use cases behind the HTTP API."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy.exc
from sqlalchemy.engine import Connection

from domain.errors import IdempotencyConflict, OrderNotFound, UnknownBook
from domain.model import Book, Order, OrderStatus, check_quantity
from infra import metrics
from infra import repository as repo
from infra.logs import log_context
from saga.definition import SagaDefinition
from saga.order_saga import ORDER_SAGA
from services import retention
from services.executor import first_dispatch, start_saga
from services.runtime import Runtime
from services.steps import publish

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlaceOrder:
    customer_id: int
    book_id: int
    qty: int
    idempotency_key: str | None = None
    caller: str = ""  # the key's scope: the same key from another caller is another order


@dataclass(frozen=True)
class PlacedOrder:
    view: OrderView
    created: bool

    @property
    def order(self) -> Order:
        return self.view.order


def place_order(rt: Runtime, cmd: PlaceOrder, admit: Callable[[], None] | None = None) -> PlacedOrder:
    """Commit the order, its saga, its steps and the first dispatch in one transaction, then publish.

    A retry with a known Idempotency-Key gets its order back even when `admit` would turn new orders away.
    """
    check_quantity(cmd.qty)
    if cmd.idempotency_key:
        existing = _replay(rt, cmd)
        if existing:
            return existing
    if admit is not None:
        admit()
    try:
        placed, dispatches = _insert(rt, cmd)
    except sqlalchemy.exc.IntegrityError:
        replay = _replay(rt, cmd) if cmd.idempotency_key else None
        if replay is None:
            raise
        return replay
    with log_context(order_id=placed.order.id, saga_id=placed.view.saga_id):
        log.info("order %s placed: saga %s", placed.order.id, placed.view.saga_id)
    publish(rt, dispatches, placed.order.id)
    return placed


def _insert(rt: Runtime, cmd: PlaceOrder) -> tuple[PlacedOrder, list[tuple[int, str]]]:
    now = rt.clock()
    definition = rt.definitions[ORDER_SAGA.kind]
    first = first_dispatch(definition)
    if first is not None and rt.db.dialect == "postgresql":
        return _insert_at_once(rt, cmd, definition, first, now)
    with rt.db.transaction() as conn:
        book = repo.get_book(conn, cmd.book_id)
        if book is None:
            raise UnknownBook(cmd.book_id)
        order = Order.place(cmd.customer_id, book, cmd.qty)
        order_id = repo.add_order(conn, order, cmd.idempotency_key, cmd.caller)
        saga, dispatches = start_saga(conn, rt, definition, order_id, now)
        saga_id = saga.id
        repo.add_customer_order(conn, order, book.title, saga_id)
    view = OrderView(order, saga_id, book.title, ({"id": saga_id, "kind": ORDER_SAGA.kind, "status": "RUNNING"},))
    return PlacedOrder(view, created=True), dispatches


def _insert_at_once(rt: Runtime, cmd: PlaceOrder, definition: SagaDefinition, first: str,
                    now: datetime) -> tuple[PlacedOrder, list[tuple[int, str]]]:
    """PostgreSQL: the same rows as above in one statement on an autocommit connection (one round trip)."""
    order = Order.place(cmd.customer_id, Book(cmd.book_id, "", 0), cmd.qty)
    with rt.db.autocommit() as conn:
        row = repo.place_order_at_once(conn, definition, order, cmd.idempotency_key, cmd.caller, now, first)
    if row is None:
        raise UnknownBook(cmd.book_id)
    metrics.saga_started(definition.kind)
    order.id, order.amount_cents = row.order_id, row.amount_cents
    view = OrderView(order, row.saga_id, row.title,
                     ({"id": row.saga_id, "kind": ORDER_SAGA.kind, "status": "RUNNING"},))
    return PlacedOrder(view, created=True), [(row.saga_id, first)]


def _replay(rt: Runtime, cmd: PlaceOrder) -> PlacedOrder | None:
    """The order an earlier request of the same caller with the same Idempotency-Key created, if any."""
    assert cmd.idempotency_key
    with rt.db.reading() as conn:
        order = repo.find_order_by_key(conn, cmd.caller, cmd.idempotency_key)
    if order is None:
        return None
    if (order.customer_id, order.book_id, order.qty) != (cmd.customer_id, cmd.book_id, cmd.qty):
        raise IdempotencyConflict(cmd.idempotency_key)
    assert order.id is not None
    return PlacedOrder(get_order(rt, order.id), created=False)


@dataclass(frozen=True)
class OrderView:
    order: Order
    saga_id: int | None
    title: str
    sagas: tuple[dict[str, Any], ...] = ()


def get_order(rt: Runtime, order_id: int) -> OrderView:
    """The order, its book's title and every saga that worked on it (the order saga first)."""
    with rt.db.reading() as conn:
        order = repo.get_order(conn, order_id)
        if order is None:
            raise OrderNotFound(order_id)
        book = repo.get_book(conn, order.book_id)
        sagas = tuple({"id": s.id, "kind": s.kind, "status": s.status} for s in repo.sagas_of_order(conn, order_id))
        return OrderView(order, sagas[0]["id"] if sagas else None, book.title if book else "", sagas)


SETTLED = (OrderStatus.PAID, OrderStatus.SHIPPED, OrderStatus.REJECTED, OrderStatus.CANCELLED)


def wait_for_payment(rt: Runtime, order_id: int, timeout_s: float, poll_s: float = 0.05,
                     sleep: Callable[[float], None] = time.sleep) -> OrderView:
    """Poll the database (the truth, never a Celery result) until payment is settled or time runs out."""
    deadline = time.monotonic() + timeout_s
    view = get_order(rt, order_id)
    while view.order.status not in SETTLED and time.monotonic() < deadline:
        sleep(min(poll_s, max(deadline - time.monotonic(), 0)))
        poll_s = min(poll_s * 1.5, 0.5)
        view = get_order(rt, order_id)
    return view


@dataclass(frozen=True)
class SagaView:
    saga: Any
    steps: list[Any]


def get_saga(rt: Runtime, saga_id: int) -> SagaView:
    with rt.db.reading() as conn:
        return saga_view(conn, saga_id)


def saga_view(conn: Connection, saga_id: int) -> SagaView:
    """The saga row and its step rows in order, read in the caller's transaction."""
    saga = repo.saga_row(conn, saga_id)
    if saga is None:
        raise retention.missing(conn, saga_id)
    return SagaView(saga, list(repo.saga_step_rows(conn, saga_id)))


def list_books(rt: Runtime) -> list[Book]:
    with rt.db.reading() as conn:
        return repo.list_books(conn)


def customer_orders(rt: Runtime, customer_id: int, page: int, page_size: int) -> tuple[list[Any], int]:
    with rt.db.reading() as conn:
        return repo.customer_order_page(conn, customer_id, (page - 1) * page_size, page_size)


def notifications(rt: Runtime, customer_id: int | None, page: int, page_size: int) -> tuple[list[Any], int]:
    with rt.db.reading() as conn:
        return repo.notification_page(conn, customer_id, (page - 1) * page_size, page_size)
