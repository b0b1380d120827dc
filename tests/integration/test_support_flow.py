"""Support end to end, with a real worker process, the sandbox and SQLite or PostgreSQL: a customer's message
fails while messaging rejects it; support finds the saga by searching, retries the step once messaging is back,
and the message goes out; the audit log says who did it and why."""
from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Stack
from tests.integration.test_order_saga import place
from tests.support import api_client, wait_until

pytestmark = pytest.mark.integration


def test_support_finds_a_failed_notify_by_search_retries_it_and_the_audit_log_says_who_and_why(
        live: Stack) -> None:
    live.sandbox.behave("messaging", reject=True)
    order = place(live, customer_id=31)
    live.wait_saga(order["saga_id"])
    live.sandbox.reset()  # messaging accepts messages again
    support = api_client(live.client.application, "support")

    found = support.get("/admin/sagas?failing_step=notify&error=422&customer_id=31").get_json()
    assert [(s["id"], s["status"], s["failing_step"]) for s in found] == [(order["saga_id"], "COMPLETED", "notify")]

    response = support.post(f"/admin/sagas/{order['saga_id']}/retry",
                                json={"reason": "messaging rejected it during their outage"})
    assert response.status_code == 200, response.get_data(as_text=True)

    def sent() -> dict[str, Any] | None:
        view = support.get(f"/admin/sagas/{order['saga_id']}").get_json()
        notify = next(s for s in view["steps"] if s["name"] == "notify")
        return view if view["status"] == "COMPLETED" and notify["status"] == "SUCCEEDED" else None

    view = wait_until(sent, 30, 0.2, "the retried notify to succeed")
    assert [m["order_id"] for m in live.sandbox.ledger("messaging", order["id"])] == [order["id"]]
    [entry] = view["audit"]
    assert (entry["action"], entry["reason"], entry["outcome"]) == (
        "retry", "messaging rejected it during their outage", "done")
    assert (entry["state_before"], entry["state_after"]) == ("COMPLETED:notify", "RUNNING")
    assert (entry["actor"], entry["role"]) == ("support", "support")  # the token's name (its role, unnamed)
    notes = live.client.get("/notifications?customer_id=31").get_json()
    assert [n["status"] for n in notes] == ["SENT"]
