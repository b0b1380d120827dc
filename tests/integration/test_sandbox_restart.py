"""The sandbox under gunicorn keeps its ledgers in its data folder: a restarted sandbox still refunds a charge and
cancels a shipment made before the restart, as a real provider does, even after a kill -9."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import Sandbox, free_port, start_sandbox

pytestmark = pytest.mark.integration


def call(url: str, path: str, body: dict[str, Any], key: str) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, headers={"Idempotency-Key": key}, timeout=5)


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_a_restarted_sandbox_refunds_and_cancels_what_it_did_before(tmp_path: Path, stop_with: int) -> None:
    data = tmp_path / "data"
    before = start_sandbox(free_port(), tmp_path, data)
    try:
        charge = call(before.url, "/payment/charges", {"order_id": 7, "amount_cents": 5990}, "saga-1:pay").json()
        shipment = call(before.url, "/delivery/shipments", {"order_id": 7}, "saga-1:ship").json()
    finally:
        before.stop(stop_with)
    after = start_sandbox(free_port(), tmp_path, data)
    try:
        refund = call(after.url, "/payment/refunds", {"order_id": 7, "charge_id": charge["id"]}, "refund:1")
        assert (refund.status_code, refund.json()["amount_cents"]) == (201, 5990), refund.text
        cancel = call(after.url, "/delivery/cancellations", {"order_id": 7, "shipment_id": shipment["id"]}, "c:1")
        assert cancel.status_code == 201, cancel.text
        replay = call(after.url, "/payment/charges", {"order_id": 7, "amount_cents": 5990}, "saga-1:pay")
        assert (replay.status_code, replay.json()) == (201, charge)
        sandbox = Sandbox(after.url)
        assert [e["kind"] for e in sandbox.ledger("payment")] == ["charge", "refund"]
        assert [e["kind"] for e in sandbox.ledger("delivery")] == ["ship", "cancel"]
    finally:
        after.stop()


def test_reset_with_ledgers_makes_the_sandbox_forget_across_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    before = start_sandbox(free_port(), tmp_path, data)
    try:
        call(before.url, "/payment/charges", {"order_id": 7, "amount_cents": 5990}, "saga-1:pay")
        Sandbox(before.url).reset()
        assert len(Sandbox(before.url).ledger("payment")) == 1  # behaviours only
        Sandbox(before.url).reset(ledgers=True)
    finally:
        before.stop()
    after = start_sandbox(free_port(), tmp_path, data)
    try:
        assert Sandbox(after.url).ledger("payment") == []
        refund = call(after.url, "/payment/refunds", {"order_id": 7, "charge_id": "ch_1"}, "refund:1")
        assert refund.status_code == 404
    finally:
        after.stop()
