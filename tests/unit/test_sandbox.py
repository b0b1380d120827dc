"""Tests of the sandbox third-party providers app (payment, delivery, messaging)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from sandbox.app import create_app

PROBLEM = "application/problem+json"


@pytest.fixture
def client() -> FlaskClient:
    """Return a test client of a fresh sandbox app."""
    return create_app().test_client()


def call(client: FlaskClient, path: str, body: dict[str, Any], key: str | None = "key-1") -> Any:
    """POST a provider call with an optional Idempotency-Key."""
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(path, json=body, headers=headers)


def behave(client: FlaskClient, provider: str, **fields: Any) -> Any:
    """PUT behaviour changes for a provider and check they are accepted."""
    response = client.put(f"/{provider}/behavior", json=fields)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def ledger(client: FlaskClient, provider: str) -> list[dict[str, Any]]:
    """Return a provider's ledger."""
    response = client.get(f"/{provider}/ledger")
    assert response.status_code == 200
    return response.get_json()


def charge(client: FlaskClient, key: str = "key-1", order_id: int = 1, amount: int = 500) -> Any:
    """Charge an order."""
    return call(client, "/payment/charges", {"order_id": order_id, "amount_cents": amount}, key)


def test_health_answers_ok(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_charge_answers_201_and_records_a_charge_entry(client: FlaskClient) -> None:
    response = call(client, "/payment/charges", {"order_id": 7, "amount_cents": 1250, "customer_id": 3})
    assert response.status_code == 201
    assert response.get_json() == {"id": "ch_1", "status": "charged", "order_id": 7, "amount_cents": 1250}
    [entry] = ledger(client, "payment")
    assert entry["id"] == "ch_1"
    assert entry["kind"] == "charge"
    assert entry["idempotency_key"] == "key-1"
    assert (entry["order_id"], entry["amount_cents"], entry["customer_id"]) == (7, 1250, 3)
    assert datetime.fromisoformat(entry["created_at"]).utcoffset() == UTC.utcoffset(None)


def test_repeated_idempotency_key_returns_first_answer_and_adds_no_entry(client: FlaskClient) -> None:
    first = charge(client, key="same")
    second = charge(client, key="same")
    assert (second.status_code, second.get_json()) == (first.status_code, first.get_json())
    assert len(ledger(client, "payment")) == 1


def test_distinct_idempotency_keys_make_distinct_charges(client: FlaskClient) -> None:
    assert charge(client, key="a").get_json()["id"] == "ch_1"
    assert charge(client, key="b").get_json()["id"] == "ch_2"
    assert [entry["idempotency_key"] for entry in ledger(client, "payment")] == ["a", "b"]


def test_concurrent_calls_with_one_key_record_one_entry() -> None:
    app = create_app()
    app.test_client().put("/delivery/behavior", json={"latency_ms": [20, 20]})
    answers: list[Any] = []

    def ship() -> None:
        response = call(app.test_client(), "/delivery/shipments", {"order_id": 1}, "shared")
        answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=ship) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(map(repr, answers))) == 1
    assert len(ledger(app.test_client(), "delivery")) == 1


def test_charge_above_decline_over_is_declined_with_402_and_a_decline_entry(client: FlaskClient) -> None:
    behave(client, "payment", decline_over=1000)
    response = charge(client, amount=1001)
    assert response.status_code == 402
    body = response.get_json()
    summary = (body["id"], body["status"], body["order_id"], body["amount_cents"])
    assert summary == ("dc_1", "declined", 1, 1001)
    assert body["title"] and body["detail"]
    [entry] = ledger(client, "payment")
    assert (entry["kind"], entry["amount_cents"]) == ("decline", 1001)


def test_charge_at_decline_over_is_charged(client: FlaskClient) -> None:
    behave(client, "payment", decline_over=1000)
    assert charge(client, amount=1000).status_code == 201


def test_down_provider_answers_503_and_records_nothing(client: FlaskClient) -> None:
    behave(client, "payment", down=True)
    response = charge(client)
    assert response.status_code == 503
    assert response.content_type == PROBLEM
    assert ledger(client, "payment") == []


def test_error_rate_one_answers_503(client: FlaskClient) -> None:
    behave(client, "messaging", error_rate=1.0)
    response = call(client, "/messaging/messages", {"order_id": 1, "customer_id": 2, "text": "hi"})
    assert response.status_code == 503
    assert ledger(client, "messaging") == []


def test_a_503_is_not_remembered_so_a_retry_with_the_same_key_succeeds(client: FlaskClient) -> None:
    behave(client, "payment", down=True)
    charge(client, key="retry")
    behave(client, "payment", down=False)
    assert charge(client, key="retry").status_code == 201


def test_a_rejection_answers_422_and_is_not_remembered_for_the_key(client: FlaskClient) -> None:
    """Like a real provider's refusal of input that fails validation: the same key may be sent again once the
    input is fixed (a support person's retry), and then the call takes effect once."""
    behave(client, "delivery", reject=True)
    response = call(client, "/delivery/shipments", {"order_id": 1}, "rejected")
    assert response.status_code == 422
    assert response.content_type == PROBLEM
    assert ledger(client, "delivery") == []
    behave(client, "delivery", reject=False)
    assert call(client, "/delivery/shipments", {"order_id": 1}, "rejected").status_code == 201
    assert call(client, "/delivery/shipments", {"order_id": 1}, "rejected").status_code == 201
    assert [entry["kind"] for entry in ledger(client, "delivery")] == ["ship"]


def test_refund_answers_201_with_the_charged_amount(client: FlaskClient) -> None:
    charge(client, amount=900)
    response = call(client, "/payment/refunds", {"order_id": 1, "charge_id": "ch_1"}, "refund-1")
    assert response.status_code == 201
    expected = {"id": "rf_1", "status": "refunded", "charge_id": "ch_1", "order_id": 1, "amount_cents": 900}
    assert response.get_json() == expected
    assert ledger(client, "payment")[-1]["kind"] == "refund"


def test_second_refund_of_a_charge_with_another_key_answers_200_with_the_first_refund(
    client: FlaskClient,
) -> None:
    charge(client)
    first = call(client, "/payment/refunds", {"order_id": 1, "charge_id": "ch_1"}, "refund-1")
    second = call(client, "/payment/refunds", {"order_id": 1, "charge_id": "ch_1"}, "refund-2")
    assert second.status_code == 200
    assert second.get_json() == first.get_json()
    assert [entry["kind"] for entry in ledger(client, "payment")] == ["charge", "refund"]


def test_refund_of_unknown_charge_answers_404_problem(client: FlaskClient) -> None:
    response = call(client, "/payment/refunds", {"order_id": 1, "charge_id": "ch_99"})
    assert response.status_code == 404
    assert response.content_type == PROBLEM
    assert response.get_json()["status"] == 404


def test_refund_for_another_order_answers_422_naming_order_id(client: FlaskClient) -> None:
    charge(client, order_id=1)
    response = call(client, "/payment/refunds", {"order_id": 2, "charge_id": "ch_1"}, "refund-1")
    assert response.status_code == 422
    assert response.get_json()["field"] == "order_id"


def test_shipment_can_be_cancelled_only_once(client: FlaskClient) -> None:
    shipped = call(client, "/delivery/shipments", {"order_id": 4, "book_id": 9, "qty": 2}, "ship")
    assert shipped.get_json() == {"id": "sh_1", "status": "shipped", "order_id": 4}
    first = call(client, "/delivery/cancellations", {"order_id": 4, "shipment_id": "sh_1"}, "cancel-1")
    second = call(client, "/delivery/cancellations", {"order_id": 4, "shipment_id": "sh_1"}, "cancel-2")
    assert first.status_code == 201
    assert first.get_json() == {"id": "sc_1", "status": "cancelled", "shipment_id": "sh_1", "order_id": 4}
    assert (second.status_code, second.get_json()) == (200, first.get_json())
    assert [entry["kind"] for entry in ledger(client, "delivery")] == ["ship", "cancel"]


def test_cancellation_of_unknown_shipment_answers_404(client: FlaskClient) -> None:
    response = call(client, "/delivery/cancellations", {"order_id": 4, "shipment_id": "sh_1"})
    assert response.status_code == 404
    assert response.content_type == PROBLEM


def test_message_entry_records_order_customer_and_text(client: FlaskClient) -> None:
    response = call(client, "/messaging/messages", {"order_id": 5, "customer_id": 8, "text": "Shipped!"}, "m")
    assert response.status_code == 201
    assert response.get_json() == {"id": "msg_1", "status": "sent", "order_id": 5, "customer_id": 8}
    [entry] = ledger(client, "messaging")
    expected = {"id": "msg_1", "kind": "message", "idempotency_key": "m", "order_id": 5, "customer_id": 8}
    assert entry.items() >= expected.items()
    assert entry["text"] == "Shipped!"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/payment/charges", {"amount_cents": 100}, "order_id"),
        ("/payment/charges", {"order_id": "1", "amount_cents": 100}, "order_id"),
        ("/payment/charges", {"order_id": 1, "amount_cents": 0}, "amount_cents"),
        ("/payment/charges", {"order_id": 1, "amount_cents": True}, "amount_cents"),
        ("/payment/charges", {"order_id": 1, "amount_cents": 10, "customer_id": 1.5}, "customer_id"),
        ("/payment/refunds", {"order_id": 1, "charge_id": 3}, "charge_id"),
        ("/delivery/shipments", {"order_id": 1, "qty": 0}, "qty"),
        ("/delivery/cancellations", {"order_id": 1}, "shipment_id"),
        ("/messaging/messages", {"order_id": 1, "customer_id": 2, "text": ""}, "text"),
        ("/messaging/messages", {"order_id": 1, "text": "hi"}, "customer_id"),
    ],
)
def test_invalid_call_body_answers_422_naming_the_field(
    client: FlaskClient, path: str, body: dict[str, Any], field: str
) -> None:
    response = call(client, path, body)
    assert response.status_code == 422
    assert response.content_type == PROBLEM
    assert response.get_json()["field"] == field
    assert field in response.get_json()["detail"]


def test_invalid_call_body_is_not_remembered_for_the_key(client: FlaskClient) -> None:
    assert call(client, "/payment/charges", {"order_id": 1}, "k").status_code == 422
    assert charge(client, key="k").status_code == 201


def test_missing_idempotency_key_answers_400(client: FlaskClient) -> None:
    response = call(client, "/payment/charges", {"order_id": 1, "amount_cents": 100}, key=None)
    assert response.status_code == 400
    assert response.content_type == PROBLEM
    assert ledger(client, "payment") == []


def test_malformed_call_json_answers_400(client: FlaskClient) -> None:
    response = client.post("/payment/charges", data="{nope", headers={"Idempotency-Key": "k"})
    assert response.status_code == 400
    assert response.content_type == PROBLEM


def test_behavior_starts_at_defaults(client: FlaskClient) -> None:
    assert client.get("/payment/behavior").get_json() == {
        "latency_ms": [0, 0],
        "error_rate": 0.0,
        "down": False,
        "reject": False,
        "lose_response": 0.0,
        "hang_ms": 10000,
        "decline_over": None,
    }
    assert "decline_over" not in client.get("/delivery/behavior").get_json()


def test_behavior_put_merges_fields_and_returns_full_behavior(client: FlaskClient) -> None:
    behave(client, "messaging", down=True)
    body = behave(client, "messaging", latency_ms=[1, 2])
    assert (body["down"], body["latency_ms"], body["reject"]) == (True, [1, 2], False)
    assert client.get("/messaging/behavior").get_json() == body


@pytest.mark.parametrize(
    ("provider", "body", "field"),
    [
        ("payment", {"colour": "red"}, "colour"),
        ("delivery", {"decline_over": 100}, "decline_over"),
        ("payment", {"latency_ms": [5, 1]}, "latency_ms"),
        ("payment", {"latency_ms": [-1, 1]}, "latency_ms"),
        ("payment", {"latency_ms": 5}, "latency_ms"),
        ("payment", {"error_rate": 1.5}, "error_rate"),
        ("payment", {"error_rate": "0.5"}, "error_rate"),
        ("payment", {"down": 1}, "down"),
        ("payment", {"reject": "yes"}, "reject"),
        ("payment", {"decline_over": -1}, "decline_over"),
        ("payment", {"lose_response": -0.1}, "lose_response"),
        ("payment", {"hang_ms": 1.5}, "hang_ms"),
    ],
)
def test_invalid_behavior_answers_422_naming_the_field(
    client: FlaskClient, provider: str, body: dict[str, Any], field: str
) -> None:
    before = client.get(f"/{provider}/behavior").get_json()
    response = client.put(f"/{provider}/behavior", json=body)
    assert response.status_code == 422
    assert response.content_type == PROBLEM
    problem = response.get_json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert problem["field"] == field
    assert field in problem["detail"]
    assert client.get(f"/{provider}/behavior").get_json() == before


@pytest.mark.parametrize("data", ["{not json", "[1, 2]", "", "NaN"])
def test_malformed_behavior_json_answers_400(client: FlaskClient, data: str) -> None:
    response = client.put("/payment/behavior", data=data, content_type="application/json")
    assert response.status_code == 400
    assert response.content_type == PROBLEM


def test_behavior_of_unknown_provider_answers_404_problem(client: FlaskClient) -> None:
    response = client.get("/bank/behavior")
    assert response.status_code == 404
    assert response.content_type == PROBLEM


def test_reset_restores_default_behaviours_and_keeps_ledgers_and_idempotency_records(client: FlaskClient) -> None:
    defaults = client.get("/payment/behavior").get_json()
    first = charge(client, key="k", amount=100)
    behave(client, "payment", down=True, decline_over=5)
    response = client.post("/reset")
    assert response.status_code == 204
    assert client.get("/payment/behavior").get_json() == defaults
    assert [entry["amount_cents"] for entry in ledger(client, "payment")] == [100]
    again = charge(client, key="k", amount=200)
    assert (again.status_code, again.get_json()) == (201, first.get_json())
    assert charge(client, key="k2").get_json()["id"] == "ch_2"


def test_reset_with_ledgers_also_forgets_ledgers_counters_and_idempotency_records(client: FlaskClient) -> None:
    defaults = client.get("/payment/behavior").get_json()
    charge(client, key="k", amount=100)
    behave(client, "payment", decline_over=5)
    assert client.post("/reset?ledgers=true").status_code == 204
    assert client.get("/payment/behavior").get_json() == defaults
    assert ledger(client, "payment") == []
    again = charge(client, key="k", amount=200)
    assert again.get_json() == {"id": "ch_1", "status": "charged", "order_id": 1, "amount_cents": 200}
    assert len(ledger(client, "payment")) == 1


def test_reset_with_a_ledgers_value_other_than_true_or_false_answers_400(client: FlaskClient) -> None:
    charge(client)
    response = client.post("/reset?ledgers=yes")
    assert response.status_code == 400
    assert response.content_type == PROBLEM
    assert len(ledger(client, "payment")) == 1


def test_lost_response_still_records_the_entry_and_the_replay_answers_at_once(
    client: FlaskClient,
) -> None:
    behave(client, "payment", lose_response=1.0, hang_ms=100)
    started = time.monotonic()
    first = charge(client, key="lost")
    assert time.monotonic() - started >= 0.1
    assert first.status_code == 201
    assert [entry["kind"] for entry in ledger(client, "payment")] == ["charge"]
    started = time.monotonic()
    replay = charge(client, key="lost")
    assert time.monotonic() - started < 0.1
    assert replay.get_json() == first.get_json()
    assert len(ledger(client, "payment")) == 1


def test_latency_is_applied(client: FlaskClient) -> None:
    behave(client, "delivery", latency_ms=[50, 50])
    started = time.monotonic()
    response = call(client, "/delivery/shipments", {"order_id": 1})
    assert response.status_code == 201
    assert time.monotonic() - started >= 0.05


def test_unknown_route_answers_404_problem(client: FlaskClient) -> None:
    response = client.get("/payment/nothing-here")
    assert response.status_code == 404
    assert response.content_type == PROBLEM
    assert response.get_json()["status"] == 404


def test_wrong_method_answers_405_problem(client: FlaskClient) -> None:
    response = client.get("/payment/charges")
    assert response.status_code == 405
    assert response.content_type == PROBLEM
    assert "POST" in response.headers["Allow"]
