"""The order saga end to end: API -> saga table -> real Celery worker -> sandbox providers, on SQLite and PostgreSQL."""
from __future__ import annotations

import time

import pytest

from tests.integration.conftest import Stack
from tests.support import bearer, wait_until

pytestmark = pytest.mark.integration
STEPS = ["pay", "confirm", "ship", "mark_shipped", "notify"]


def place(live: Stack, **kwargs: object) -> dict:
    response = live.post_order(**kwargs)  # type: ignore[arg-type]
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_posted_order_reaches_shipped_with_every_step_succeeded_and_one_effect_each(live: Stack) -> None:
    response = live.post_order(customer_id=11, book_id=2, qty=3)
    assert response.status_code == 202
    order = response.get_json()
    assert response.headers["Location"] == f"/orders/{order['id']}"
    assert order["status"] == "PENDING" and order["amount"] == "164.97" and order["amount_cents"] == 16497

    saga = live.wait_saga(order["saga_id"])

    assert saga["status"] == "COMPLETED"
    assert [s["name"] for s in saga["steps"]] == STEPS
    assert all(s["status"] == "SUCCEEDED" and s["attempts"] == 1 for s in saga["steps"]), saga["steps"]
    assert live.order(order["id"])["status"] == "SHIPPED"
    charges = live.sandbox.ledger("payment", order["id"])
    assert [(c["kind"], c["amount_cents"]) for c in charges] == [("charge", 16497)]
    assert [e["kind"] for e in live.sandbox.ledger("delivery", order["id"])] == ["ship"]
    messages = live.sandbox.ledger("messaging", order["id"])
    assert len(messages) == 1 and messages[0]["customer_id"] == 11 and "has shipped" in messages[0]["text"]


def test_a_viewer_token_creates_nothing_and_a_support_token_runs_an_order_to_shipped(live: Stack) -> None:
    body = {"customer_id": 90, "book_id": 1, "qty": 1}
    refused = live.client.post("/orders", json=body, headers=bearer("viewer"))
    assert refused.status_code == 403 and refused.mimetype == "application/problem+json"
    unauthenticated = live.client.post("/orders", json=body, headers={"Authorization": "Bearer nobody-has-this-token"})
    assert unauthenticated.status_code == 401 and "Bearer" in unauthenticated.headers["WWW-Authenticate"]
    assert live.client.get("/customers/90/orders").get_json() == []

    response = live.client.post("/orders", json=body, headers=bearer("support"))

    assert response.status_code == 202, response.get_json()
    assert live.wait_saga(response.get_json()["saga_id"])["status"] == "COMPLETED"
    assert [o["status"] for o in live.client.get("/customers/90/orders").get_json()] == ["SHIPPED"]
    assert len(live.sandbox.ledger("payment", response.get_json()["id"])) == 1


def test_declined_payment_ends_rejected_with_nothing_shipped_and_no_retry(live: Stack) -> None:
    live.sandbox.behave("payment", decline_over=5000)
    order = place(live, customer_id=12, book_id=6, qty=1)  # 62.00 > 50.00

    saga = live.wait_saga(order["saga_id"])

    steps = live.steps(saga)
    assert saga["status"] == "COMPENSATED"
    assert steps["pay"]["status"] == "FAILED" and steps["pay"]["attempts"] == 1
    assert all(steps[name]["status"] == "SKIPPED" for name in STEPS[1:])
    final = live.order(order["id"])
    assert final["status"] == "REJECTED" and "declined" in final["reason"].lower()
    assert [e["kind"] for e in live.sandbox.ledger("payment", order["id"])] == ["decline"]
    assert live.sandbox.ledger("delivery", order["id"]) == []
    [message] = live.sandbox.ledger("messaging", order["id"])
    assert "was not placed: the payment did not go through" in message["text"]


def test_a_step_task_delivered_twice_changes_nothing(live: Stack) -> None:
    rt = live.client.application.extensions["bookmarket"]
    order = place(live, customer_id=13)
    rt.publisher.publish([(order["saga_id"], "pay")] * 3)  # duplicates racing the first delivery
    saga = live.wait_saga(order["saga_id"])
    before = live.steps(saga)

    assert rt.publisher.publish([(order["saga_id"], s) for s in ("pay", "ship", "notify")]) == []
    time.sleep(1.5)

    after = live.steps(live.saga(order["saga_id"]))
    assert after == before
    assert before["pay"]["attempts"] == 1
    assert len(live.sandbox.ledger("payment", order["id"])) == 1
    assert len(live.sandbox.ledger("delivery", order["id"])) == 1
    assert len(live.sandbox.ledger("messaging", order["id"])) == 1


def test_retried_post_with_the_same_idempotency_key_returns_the_same_order(live: Stack) -> None:
    first = live.post_order(customer_id=14, book_id=1, qty=2, **{"Idempotency-Key": f"k-{live.backend}-1"})
    second = live.post_order(customer_id=14, book_id=1, qty=2, **{"Idempotency-Key": f"k-{live.backend}-1"})
    other = live.post_order(customer_id=14, book_id=3, qty=2, **{"Idempotency-Key": f"k-{live.backend}-1"})

    assert first.status_code == 202 and second.status_code == 202
    assert second.get_json()["id"] == first.get_json()["id"]
    assert second.get_json()["saga_id"] == first.get_json()["saga_id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409 and other.content_type == "application/problem+json"
    live.wait_saga(first.get_json()["saga_id"])
    assert len(live.sandbox.ledger("payment", first.get_json()["id"])) == 1
    orders = live.client.get("/customers/14/orders").get_json()
    assert [o["order_id"] for o in orders] == [first.get_json()["id"]]


def test_prefer_wait_answers_201_once_paid(live: Stack) -> None:
    response = live.post_order(customer_id=15, Prefer="wait=10")
    assert response.status_code == 201
    assert response.get_json()["status"] in ("PAID", "SHIPPED")
    assert response.headers["Preference-Applied"] == "wait=10"


def test_prefer_wait_answers_402_problem_once_rejected(live: Stack) -> None:
    live.sandbox.behave("payment", reject=True)
    response = live.post_order(customer_id=16, Prefer="wait=10")
    assert response.status_code == 402
    assert response.content_type == "application/problem+json"
    body = response.get_json()
    assert body["order"]["status"] == "REJECTED" and body["status"] == 402


def test_prefer_wait_answers_202_while_payment_is_still_pending(live: Stack) -> None:
    live.sandbox.behave("payment", latency_ms=[1500, 1500])
    started = time.monotonic()
    response = live.post_order(customer_id=17, Prefer="wait=1")
    assert response.status_code == 202 and response.get_json()["status"] == "PENDING"
    assert 0.9 <= time.monotonic() - started < 1.5
    live.wait_saga(response.get_json()["saga_id"])


def test_messaging_rejecting_every_message_still_ships_and_leaves_notify_failed(live: Stack) -> None:
    live.sandbox.behave("messaging", reject=True)
    order = place(live, customer_id=18)

    saga = live.wait_saga(order["saga_id"])

    steps = live.steps(saga)
    assert saga["status"] == "COMPLETED"
    assert live.order(order["id"])["status"] == "SHIPPED"
    assert steps["notify"]["status"] == "FAILED" and steps["notify"]["attempts"] == 1
    assert "422" in steps["notify"]["error"]
    assert live.sandbox.ledger("payment", order["id"], "refund") == []
    notes = live.client.get("/notifications?customer_id=18").get_json()
    assert [(n["order_id"], n["status"]) for n in notes] == [(order["id"], "FAILED")]


def test_messaging_down_notify_is_retried_and_succeeds_once_it_is_back(live: Stack) -> None:
    live.sandbox.behave("messaging", down=True)
    order = place(live, customer_id=19)
    wait_until(lambda: live.steps(live.saga(order["saga_id"]))["notify"]["attempts"] >= 2, 20, 0.1,
               "notify to be retried")
    assert live.order(order["id"])["status"] == "SHIPPED"

    live.sandbox.behave("messaging", down=False)
    saga = live.wait_saga(order["saga_id"], timeout=40)

    notify = live.steps(saga)["notify"]
    assert saga["status"] == "COMPLETED" and notify["status"] == "SUCCEEDED" and notify["attempts"] >= 2
    assert len(live.sandbox.ledger("messaging", order["id"])) == 1
    notes = live.client.get("/notifications?customer_id=19").get_json()
    assert [(n["order_id"], n["status"]) for n in notes] == [(order["id"], "SENT")]


def test_customer_orders_read_model_lists_newest_first_with_current_status(live: Stack) -> None:
    ids = [place(live, customer_id=20, book_id=b)["id"] for b in (1, 2, 3)]
    for order_id in ids:
        live.wait_saga(live.order(order_id)["saga_id"])

    response = live.client.get("/customers/20/orders?page=1&page_size=2")

    assert response.status_code == 200
    page = response.get_json()
    assert [o["order_id"] for o in page] == ids[::-1][:2]
    assert all(o["status"] == "SHIPPED" for o in page)
    assert '"total": 3' in response.headers["X-Pagination"]
    rest = live.client.get("/customers/20/orders?page=2&page_size=2").get_json()
    assert [o["order_id"] for o in rest] == ids[:1]
