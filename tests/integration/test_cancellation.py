"""Every way out of a saga: failures for good, cancels racing each step, cancels after completion."""
from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Stack
from tests.support import wait_until

pytestmark = pytest.mark.integration


def place(live: Stack, customer_id: int, **kwargs: Any) -> dict[str, Any]:
    response = live.post_order(customer_id=customer_id, **kwargs)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def cancel(live: Stack, order_id: int, reason: str | None = None) -> Any:
    return live.client.post(f"/orders/{order_id}/cancel", json={"reason": reason} if reason else {})


def compensations_in_order(saga: dict[str, Any]) -> list[str]:
    done = [s for s in saga["steps"] if s["name"].startswith("cancel_") and s["status"] == "COMPENSATED"]
    return [s["name"] for s in sorted(done, key=lambda s: s["finished_at"])]


def assert_money_and_goods_consistent(live: Stack, order_id: int) -> None:
    """At most one charge; a cancelled order has each charge refunded once and no active delivery."""
    payment = live.sandbox.ledger("payment", order_id)
    delivery = live.sandbox.ledger("delivery", order_id)
    charges = [e for e in payment if e["kind"] == "charge"]
    refunds = [e for e in payment if e["kind"] == "refund"]
    ships = [e for e in delivery if e["kind"] == "ship"]
    cancels = [e for e in delivery if e["kind"] == "cancel"]
    assert len(charges) <= 1 and len(ships) <= 1
    if live.order(order_id)["status"] in ("CANCELLED", "REJECTED"):
        assert sorted(r["charge_id"] for r in refunds) == sorted(c["id"] for c in charges)
        assert sorted(c["shipment_id"] for c in cancels) == sorted(s["id"] for s in ships)
    else:
        assert refunds == [] and cancels == []


def told(live: Stack, order_id: int) -> list[str]:
    """What the customer was told about the order, as the messaging provider received it, oldest first."""
    return [m["text"] for m in live.sandbox.ledger("messaging", order_id)]


NOT_PAID, REFUNDED = "the payment did not go through", "could not be completed. Your payment of"
FAILURES = [
    # provider, behaviour, failing step, compensations (in order), saga status, order status, customer told
    ("payment", {"reject": True}, "pay", [], "COMPENSATED", "REJECTED", NOT_PAID),
    ("payment", {"error_rate": 1.0}, "pay", [], "COMPENSATED", "REJECTED", NOT_PAID),
    ("delivery", {"reject": True}, "ship", ["cancel_payment"], "COMPENSATED", "CANCELLED", REFUNDED),
    ("delivery", {"error_rate": 1.0}, "ship", ["cancel_payment"], "COMPENSATED", "CANCELLED", REFUNDED),
    ("messaging", {"reject": True}, "notify", [], "COMPLETED", "SHIPPED", None),
    ("messaging", {"error_rate": 1.0}, "notify", [], "COMPLETED", "SHIPPED", None),
]


@pytest.mark.parametrize("provider, behavior, step, compensations, saga_status, order_status, words", FAILURES,
                         ids=[f"{f[2]}-{next(iter(f[1]))}" for f in FAILURES])
def test_a_step_failing_for_good_undoes_exactly_what_was_done_and_tells_the_customer(
    live: Stack, provider: str, behavior: dict[str, Any], step: str, compensations: list[str], saga_status: str,
    order_status: str, words: str | None,
) -> None:
    live.sandbox.behave(provider, **behavior)
    order = place(live, customer_id=30)

    saga = live.wait_saga(order["saga_id"], timeout=60)

    steps = live.steps(saga)
    assert saga["status"] == saga_status
    assert steps[step]["status"] == "FAILED" and steps[step]["error"]
    expected_attempts = 1 if "reject" in behavior else steps[step]["max_attempts"]
    assert steps[step]["attempts"] == expected_attempts
    assert compensations_in_order(saga) == compensations
    final = live.order(order["id"])
    assert final["status"] == order_status
    if saga_status == "COMPENSATED":
        assert step in final["reason"]
        assert len(told(live, order["id"])) == 1 and words in told(live, order["id"])[0]
        assert live.steps(saga)["notify_outcome"]["status"] == "COMPENSATED"
    assert_money_and_goods_consistent(live, order["id"])


def test_a_compensation_that_keeps_failing_parks_the_saga_failed_with_its_error(live: Stack) -> None:
    live.sandbox.behave("delivery", reject=True, latency_ms=[600, 600])
    order = place(live, customer_id=31)
    wait_until(lambda: live.steps(live.saga(order["saga_id"]))["ship"]["status"] == "RUNNING", 10, 0.05,
               "ship to be in flight")
    live.sandbox.behave("payment", down=True)

    saga = live.wait_saga(order["saga_id"], timeout=60)

    refund = live.steps(saga)["cancel_payment"]
    assert saga["status"] == "FAILED" and "cancel_payment failed" in saga["reason"]
    assert refund["status"] == "FAILED" and "503" in refund["error"]
    assert refund["attempts"] == refund["max_attempts"] == 8
    assert live.order(order["id"])["status"] == "PAID"
    assert cancel(live, order["id"]).status_code == 409


@pytest.mark.parametrize("provider, step", [("payment", "pay"), ("delivery", "ship"), ("messaging", "notify")])
def test_cancel_racing_a_step_in_flight_compensates_at_the_step_boundary(live: Stack, provider: str,
                                                                         step: str) -> None:
    live.sandbox.behave(provider, latency_ms=[700, 700])
    order = place(live, customer_id=32)
    wait_until(lambda: live.steps(live.saga(order["saga_id"]))[step]["status"] == "RUNNING", 10, 0.05,
               f"{step} to be in flight")

    response = cancel(live, order["id"], "changed my mind")

    assert response.status_code == 202
    assert live.saga(order["saga_id"])["cancel_requested"] is True
    saga = live.wait_saga(order["saga_id"])
    expected = {"pay": ["cancel_payment"], "ship": ["cancel_delivery", "cancel_payment"],
                "notify": ["cancel_delivery", "cancel_payment"]}[step]
    assert saga["status"] == "COMPENSATED"
    assert compensations_in_order(saga) == expected
    final = live.order(order["id"])
    assert final["status"] == "CANCELLED" and final["reason"] == "changed my mind"
    assert_money_and_goods_consistent(live, order["id"])
    assert "has been cancelled as you asked. Your payment of" in told(live, order["id"])[-1]


def wait_for_retry(live: Stack, order: dict[str, Any], step: str) -> None:
    def waiting() -> bool:
        row = live.steps(live.saga(order["saga_id"]))[step]
        return bool(row["attempts"] >= 1 and row["status"] == "PENDING")

    wait_until(waiting, 10, 0.02, f"{step} to wait for a retry")


def test_cancel_during_a_retry_backoff_compensates_at_once(live: Stack) -> None:
    live.sandbox.behave("delivery", down=True)
    order = place(live, customer_id=33)
    wait_for_retry(live, order, "ship")

    assert cancel(live, order["id"]).status_code == 202

    saga = live.wait_saga(order["saga_id"])
    assert saga["status"] == "COMPENSATED"
    assert live.steps(saga)["ship"]["status"] == "SKIPPED"
    assert live.order(order["id"])["status"] == "CANCELLED"
    assert_money_and_goods_consistent(live, order["id"])
    assert "has been cancelled as you asked. Your payment of" in told(live, order["id"])[-1]


def test_a_cancel_before_payment_is_made_tells_the_customer_nothing_was_charged(live: Stack) -> None:
    live.sandbox.behave("payment", down=True)
    order = place(live, customer_id=38)
    wait_for_retry(live, order, "pay")

    assert cancel(live, order["id"]).status_code == 202

    assert live.wait_saga(order["saga_id"])["status"] == "COMPENSATED"
    assert live.order(order["id"])["status"] == "CANCELLED"
    assert live.sandbox.ledger("payment", order["id"], "charge") == []
    assert told(live, order["id"]) == [f"Your order #{order['id']} ({order['title']}) has been cancelled as you "
                                       "asked. You have not been charged."]
    notes = live.client.get("/notifications?customer_id=38").get_json()
    assert [(n["step"], n["status"]) for n in notes] == [("notify_outcome", "SENT")]


def test_a_repeat_cancel_of_an_order_whose_cancellation_is_parked_is_a_conflict_and_the_order_says_so(
    live: Stack,
) -> None:
    order = place(live, customer_id=39)
    live.wait_saga(order["saga_id"])
    live.sandbox.behave("delivery", reject=True)
    first = cancel(live, order["id"], "arrived damaged")
    cancel_id = next(s["id"] for s in first.get_json()["sagas"] if s["kind"] == "cancel")
    assert live.wait_saga(cancel_id)["status"] == "FAILED"

    again = cancel(live, order["id"], "arrived damaged")

    assert again.status_code == 409 and again.content_type == "application/problem+json"
    assert f"saga {cancel_id}" in again.get_json()["detail"]
    final = live.order(order["id"])
    assert final["status"] == "SHIPPED" and final["needs_support"] is True
    assert f"cancel saga {cancel_id} is parked for support" in final["reason"]


def test_cancel_after_completion_runs_a_cancel_saga_that_refunds_cancels_delivery_and_tells_the_customer(
    live: Stack,
) -> None:
    order = place(live, customer_id=34)
    live.wait_saga(order["saga_id"])

    response = cancel(live, order["id"], "arrived damaged")

    assert response.status_code == 202
    cancel_saga = next(s for s in response.get_json()["sagas"] if s["kind"] == "cancel")
    saga = live.wait_saga(cancel_saga["id"])
    assert saga["status"] == "COMPLETED"
    assert [(s["name"], s["status"]) for s in saga["steps"]] == [
        ("cancel_delivery", "SUCCEEDED"), ("cancel_payment", "SUCCEEDED"), ("mark_cancelled", "SUCCEEDED"),
        ("notify_cancelled", "SUCCEEDED")]
    final = live.order(order["id"])
    assert final["status"] == "CANCELLED" and final["reason"] == "arrived damaged"
    assert_money_and_goods_consistent(live, order["id"])
    texts = [m["text"] for m in live.sandbox.ledger("messaging", order["id"])]
    assert len(texts) == 2 and "cancelled" in texts[1]
    assert live.client.get("/customers/34/orders").get_json()[0]["status"] == "CANCELLED"


def test_cancelling_again_returns_the_current_state_and_never_refunds_twice(live: Stack) -> None:
    order = place(live, customer_id=35)
    live.wait_saga(order["saga_id"])
    first = cancel(live, order["id"])
    second = cancel(live, order["id"])
    cancel_id = next(s["id"] for s in first.get_json()["sagas"] if s["kind"] == "cancel")
    live.wait_saga(cancel_id)
    third = cancel(live, order["id"])

    assert (first.status_code, second.status_code, third.status_code) == (202, 202, 202)
    assert third.get_json()["status"] == "CANCELLED"
    assert [s["kind"] for s in third.get_json()["sagas"]] == ["order", "cancel"]
    assert len(live.sandbox.ledger("payment", order["id"], "refund")) == 1
    assert_money_and_goods_consistent(live, order["id"])


def test_cancelling_a_rejected_order_is_a_conflict(live: Stack) -> None:
    live.sandbox.behave("payment", reject=True)
    order = place(live, customer_id=36)
    live.wait_saga(order["saga_id"])

    response = cancel(live, order["id"])

    assert response.status_code == 409 and response.content_type == "application/problem+json"
    assert live.sandbox.ledger("payment", order["id"], "refund") == []


def test_cancelling_an_unknown_order_is_not_found(live: Stack) -> None:
    assert cancel(live, 2_000_000_000).status_code == 404
    assert live.client.post("/orders/99999999999/cancel").status_code == 404

