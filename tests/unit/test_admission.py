"""Admission control at the API: a backlog of sagas waiting to pay turns new orders away cleanly."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from api.app import create_app
from domain.model import utcnow
from infra import repository as repo
from tests.unit.fakes import RecordingPublisher, make_runtime


def test_orders_beyond_the_payment_backlog_limit_get_503_with_retry_after_and_create_nothing(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    rt.settings = replace(rt.settings, admission_max_waiting_payments=2, admission_retry_after_s=3)  # 3 > 2
    client = create_app(rt.settings, runtime=rt).test_client()
    body = {"customer_id": 9, "book_id": 1, "qty": 1}

    assert [client.post("/orders", json=body).status_code for _ in range(3)] == [202, 202, 202]
    client.application.extensions["bookmarket.admission"]._checked_at = float("-inf")  # no cached verdict
    refused = client.post("/orders", json=body)

    assert refused.status_code == 503 and refused.content_type == "application/problem+json"
    assert refused.headers["Retry-After"] == "3"
    assert "waiting for payment" in refused.get_json()["detail"]
    assert len(client.get("/customers/9/orders").get_json()) == 3
    assert client.get("/books").status_code == 200


def test_a_retried_post_with_a_known_idempotency_key_is_answered_even_when_full(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    rt.settings = replace(rt.settings, admission_max_waiting_payments=1)
    client = create_app(rt.settings, runtime=rt).test_client()
    body = {"customer_id": 9, "book_id": 1, "qty": 1}
    first = client.post("/orders", json=body, headers={"Idempotency-Key": "a"})
    client.post("/orders", json=body)

    client.application.extensions["bookmarket.admission"]._checked_at = float("-inf")
    again = client.post("/orders", json=body, headers={"Idempotency-Key": "a"})

    assert again.status_code == 202 and again.get_json()["id"] == first.get_json()["id"]
    assert client.post("/orders", json=body).status_code == 503


def test_an_order_committed_while_the_broker_is_down_is_accepted_and_left_for_the_sweeper(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, RecordingPublisher(fail=True))
    client = create_app(rt.settings, runtime=rt).test_client()

    response = client.post("/orders", json={"customer_id": 9, "book_id": 1, "qty": 1})

    assert response.status_code == 202
    steps = client.get(f"/sagas/{response.get_json()['saga_id']}").get_json()["steps"]
    pay = next(s for s in steps if s["name"] == "pay")
    assert pay["status"] == "PENDING"
    with rt.db.reading() as conn:
        assert repo.due_dispatches(conn, utcnow(), utcnow() - timedelta(seconds=30), 10) == [
            (response.get_json()["saga_id"], "pay")]
