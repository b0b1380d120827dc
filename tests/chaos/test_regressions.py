"""Regressions for bugs the chaos scenarios found, each reduced to its smallest reproduction.

Found by test_chaos.py::test_payment_charges_but_loses_its_response: a cancel that arrived while `pay` waited for
an answer the provider lost left the order CANCELLED with its charge never refunded. A timeout now counts as
"may have happened": the step is retried with the same idempotency key before anything is compensated.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.conftest import PostgresServer, RedisServer, chaos_stack, describe_orders
from tests.support import wait_until


@pytest.mark.chaos
def test_cancel_while_the_charge_response_is_lost_still_refunds_the_charge(
    tmp_path: Path, chaos_postgres: PostgresServer, chaos_redis: RedisServer,
) -> None:
    with chaos_stack("bug-cancel-lost-charge", tmp_path, chaos_postgres, chaos_redis,
                     workers=(("w1", True),)) as stack:
        # The charge is made and recorded, then the answer is held 3 s: past PROVIDER_TIMEOUT_S=2, so the
        # pay attempt ends in a timeout (a transient failure) although the money was taken.
        stack.sandbox.behave("payment", lose_response=1.0, hang_ms=3000)
        client = stack.client()
        order = client.post("/orders", json={"customer_id": 7, "book_id": 1, "qty": 1}).get_json()
        saga_id = order["saga_id"]

        def pay_running() -> bool:
            steps = {s["name"]: s for s in client.get(f"/sagas/{saga_id}").get_json()["steps"]}
            return steps["pay"]["status"] == "RUNNING"

        wait_until(pay_running, 10, 0.02, "pay to be running")
        wait_until(lambda: stack.sandbox.ledger("payment", order["id"], "charge"), 5, 0.02, "the charge")
        assert client.post(f"/orders/{order['id']}/cancel", json={}).status_code == 202

        wait_until(lambda: stack.open_sagas() == 0, 30, 0.1, "the saga to end")
        final = client.get(f"/orders/{order['id']}").get_json()
        charges = stack.sandbox.ledger("payment", order["id"], "charge")
        refunds = stack.sandbox.ledger("payment", order["id"], "refund")
        detail = describe_orders(stack, [order["id"]])
        print(detail)
        assert final["status"] == "CANCELLED", detail
        assert len(charges) == 1, detail
        assert [r["charge_id"] for r in refunds] == [charges[0]["id"]], (
            f"order {order['id']} is CANCELLED but its charge {charges[0]['id']} was never refunded\n{detail}")
