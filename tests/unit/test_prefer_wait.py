"""`Prefer: wait=N` answers with the order as it ended: 402 only for a payment that failed."""
from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from domain.model import OrderStatus
from infra import repository as repo
from services.runtime import Runtime
from tests.support import api_client

ORDER = {"customer_id": 7, "book_id": 2, "qty": 1}


def ended_as(runtime: Runtime, client: FlaskClient, *statuses: OrderStatus) -> int:
    """Place an order (with a key, so the same POST can be repeated) and move it through `statuses`."""
    placed = client.post("/orders", json=ORDER, headers={"Idempotency-Key": "k1"}).get_json()
    with runtime.db.transaction() as conn:
        order = repo.get_order(conn, placed["id"])
        assert order is not None
        for status in statuses:
            order.move_to(status, "ship failed: address unknown")
        repo.save_order_status(conn, order)
    return int(placed["id"])


@pytest.mark.parametrize("statuses, code", [
    ((OrderStatus.PAID,), 201),
    ((OrderStatus.PAID, OrderStatus.CANCELLED), 200),  # refunded after a delivery refusal: no payment problem
    ((OrderStatus.CANCELLED,), 200),
])
def test_an_order_that_did_not_fail_payment_is_answered_as_it_is(runtime: Runtime,
                                                                  statuses: tuple[OrderStatus, ...],
                                                                  code: int) -> None:
    client = api_client(create_app(runtime.settings, runtime=runtime))
    order_id = ended_as(runtime, client, *statuses)

    response = client.post("/orders", json=ORDER, headers={"Idempotency-Key": "k1", "Prefer": "wait=1"})

    assert response.status_code == code and response.mimetype == "application/json"
    assert response.get_json()["id"] == order_id and response.get_json()["status"] == statuses[-1].value


def test_a_rejected_order_is_a_402_problem_with_the_order(runtime: Runtime) -> None:
    client = api_client(create_app(runtime.settings, runtime=runtime))
    ended_as(runtime, client, OrderStatus.REJECTED)

    response = client.post("/orders", json=ORDER, headers={"Idempotency-Key": "k1", "Prefer": "wait=1"})

    assert response.status_code == 402 and response.mimetype == "application/problem+json"
    assert response.get_json()["order"]["status"] == "REJECTED"
