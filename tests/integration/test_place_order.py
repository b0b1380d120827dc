"""Placing an order on PostgreSQL (one statement of data-modifying CTEs on an autocommit connection) and on
SQLite (an insert per table in one transaction): the same rows, the same answers, the same refusals."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.exc

from domain.errors import IdempotencyConflict, UnknownBook
from infra.db import sqlite_url_for
from infra.migrate import upgrade
from infra.tables import books, customer_orders, orders, saga_steps, sagas
from saga.order_saga import ORDER_SAGA
from services import orders as service
from services.runtime import Runtime
from tests.conftest import create_pg_database
from tests.unit.fakes import RecordingPublisher, runtime_for

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def rt(request: pytest.FixtureRequest, tmp_path: Path, postgres_server: str) -> Iterator[Runtime]:
    if request.param == "sqlite":
        url, drop = sqlite_url_for(tmp_path), (lambda: None)
    else:
        url, drop = create_pg_database(postgres_server)
    yield from _runtime(url, drop)


@pytest.fixture
def pg_rt(postgres_server: str) -> Iterator[Runtime]:
    yield from _runtime(*create_pg_database(postgres_server))


def _runtime(url: str, drop: Any) -> Iterator[Runtime]:
    upgrade(url)
    runtime = runtime_for(url)
    yield runtime
    runtime.db.dispose()
    drop()


def rows(rt: Runtime, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
    with rt.db.reading() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).where(*where))]


def test_an_order_its_saga_its_steps_and_its_read_model_row_are_written_together(rt: Runtime) -> None:
    with rt.db.reading() as conn:
        price, title = conn.execute(sa.select(books.c.price_cents, books.c.title).where(books.c.id == 2)).one()
    placed = service.place_order(rt, service.PlaceOrder(customer_id=7, book_id=2, qty=3, idempotency_key="k-1"))

    assert placed.created and placed.view.title == title and placed.order.amount_cents == 3 * price
    [order] = rows(rt, orders, orders.c.id == placed.order.id)
    assert (order["customer_id"], order["book_id"], order["qty"], order["amount_cents"], order["status"],
            order["idempotency_key"]) == (7, 2, 3, 3 * price, "PENDING", "k-1")
    [saga] = rows(rt, sagas, sagas.c.order_id == placed.order.id)
    assert saga["id"] == placed.view.saga_id
    assert (saga["kind"], saga["version"], saga["status"], saga["cancel_requested"], saga["recoveries"],
            saga["reason"], saga["finished_at"]) == (ORDER_SAGA.kind, ORDER_SAGA.version, "RUNNING", False, 0,
                                                     None, None)
    steps = sorted(rows(rt, saga_steps, saga_steps.c.saga_id == saga["id"]), key=lambda r: r["position"])
    assert [(s["name"], s["position"], s["status"], s["attempts"], s["max_attempts"], s["waited_s"],
             s["outcome_unknown"]) for s in steps] == [
        (step.name, i, "PENDING", 0, step.retry.max_attempts, 0.0, False) for i, step in enumerate(ORDER_SAGA.steps)]
    first, rest = steps[0], steps[1:]
    assert first["available_at"] == first["dispatched_at"] == first["created_at"] == saga["created_at"]
    assert all(s["available_at"] is None and s["dispatched_at"] is None for s in rest)
    [read_model] = rows(rt, customer_orders, customer_orders.c.order_id == placed.order.id)
    assert (read_model["customer_id"], read_model["book_id"], read_model["title"], read_model["qty"],
            read_model["amount_cents"], read_model["status"], read_model["saga_id"]) == (
        7, 2, title, 3, 3 * price, "PENDING", saga["id"])
    assert read_model["created_at"] == order["created_at"]
    publisher = rt.publisher
    assert isinstance(publisher, RecordingPublisher) and publisher.sent == [(saga["id"], ORDER_SAGA.steps[0].name)]


def test_a_repeated_key_gives_the_order_back_and_a_different_order_under_it_is_refused(rt: Runtime) -> None:
    first = service.place_order(rt, service.PlaceOrder(customer_id=7, book_id=1, qty=1, idempotency_key="same"))
    again = service.place_order(rt, service.PlaceOrder(customer_id=7, book_id=1, qty=1, idempotency_key="same"))
    assert not again.created and again.order.id == first.order.id and again.view.saga_id == first.view.saga_id
    with pytest.raises(IdempotencyConflict):
        service.place_order(rt, service.PlaceOrder(customer_id=7, book_id=1, qty=2, idempotency_key="same"))
    assert len(rows(rt, orders)) == 1 and len(rows(rt, sagas)) == 1 and len(rows(rt, customer_orders)) == 1


def test_an_unknown_book_writes_nothing(rt: Runtime) -> None:
    with pytest.raises(UnknownBook):
        service.place_order(rt, service.PlaceOrder(customer_id=7, book_id=999_999, qty=1))
    assert rows(rt, orders) == [] and rows(rt, sagas) == [] and rows(rt, saga_steps) == []
    assert rows(rt, customer_orders) == []


def test_a_failed_statement_leaves_no_part_of_the_order_behind_on_postgresql(pg_rt: Runtime) -> None:
    # a step name too long for its column fails the one statement after its order and saga rows were written
    rt = pg_rt
    long_step = ORDER_SAGA.steps[1].__class__(name="x" * 40, provider=ORDER_SAGA.steps[1].provider,
                                               compensation=ORDER_SAGA.steps[1].compensation)
    broken = ORDER_SAGA.__class__(**{**ORDER_SAGA.__dict__, "steps": (ORDER_SAGA.steps[0], long_step)})
    rt.definitions = {**rt.definitions, ORDER_SAGA.kind: broken}
    with pytest.raises(sqlalchemy.exc.DataError):
        service.place_order(rt, service.PlaceOrder(customer_id=7, book_id=1, qty=1))
    assert rows(rt, orders) == [] and rows(rt, sagas) == [] and rows(rt, customer_orders) == []
    assert rt.publisher.sent == []  # type: ignore[attr-defined]
