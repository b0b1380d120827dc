"""The sandbox remembers what its providers did across restarts when it has a data folder (sandbox.journal)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sandbox.app import create_app
from sandbox.journal import FILE_NAME, Journal, JournalInUse


class Restarts:
    """Sandboxes on one data folder, one at a time: start() stops the running one first, like a restart."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.app: Flask | None = None

    def start(self) -> FlaskClient:
        self.stop()
        self.app = create_app(self.folder)
        return self.app.test_client()

    def stop(self) -> None:
        if self.app is not None:
            self.app.extensions["sandbox_state"].close()
            self.app = None


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Restarts]:
    restarts = Restarts(tmp_path)
    yield restarts
    restarts.stop()


def post(client: FlaskClient, path: str, body: dict[str, Any], key: str) -> Any:
    """POST a provider call with an Idempotency-Key."""
    return client.post(path, json=body, headers={"Idempotency-Key": key})


def test_a_restarted_sandbox_refunds_a_charge_and_cancels_a_shipment_made_before(
    sandbox: Restarts,
) -> None:
    before = sandbox.start()
    charged = post(before, "/payment/charges", {"order_id": 1, "amount_cents": 700}, "saga-1:pay").get_json()
    shipped = post(before, "/delivery/shipments", {"order_id": 1}, "saga-1:ship").get_json()
    after = sandbox.start()
    refund = post(after, "/payment/refunds", {"order_id": 1, "charge_id": charged["id"]}, "refund:ch_1")
    assert (refund.status_code, refund.get_json()["amount_cents"]) == (201, 700)
    cancel = post(after, "/delivery/cancellations", {"order_id": 1, "shipment_id": shipped["id"]}, "cancel:sh_1")
    assert cancel.status_code == 201
    assert [e["kind"] for e in after.get("/payment/ledger").get_json()] == ["charge", "refund"]


def test_a_restarted_sandbox_replays_answers_keeps_counting_ids_and_refunds_once(
    sandbox: Restarts,
) -> None:
    before = sandbox.start()
    first = post(before, "/payment/charges", {"order_id": 1, "amount_cents": 700}, "a")
    refund = post(before, "/payment/refunds", {"order_id": 1, "charge_id": "ch_1"}, "r1").get_json()
    entries = before.get("/payment/ledger").get_json()
    after = sandbox.start()
    replay = post(after, "/payment/charges", {"order_id": 1, "amount_cents": 700}, "a")
    assert (replay.status_code, replay.get_json()) == (first.status_code, first.get_json())
    assert post(after, "/payment/charges", {"order_id": 2, "amount_cents": 5}, "b").get_json()["id"] == "ch_2"
    again = post(after, "/payment/refunds", {"order_id": 1, "charge_id": "ch_1"}, "r2")
    assert (again.status_code, again.get_json()) == (200, refund)
    assert after.get("/payment/ledger").get_json()[:2] == entries


def test_behaviours_start_at_their_defaults_after_a_restart(sandbox: Restarts) -> None:
    before = sandbox.start()
    defaults = before.get("/payment/behavior").get_json()
    before.put("/payment/behavior", json={"down": True})
    assert sandbox.start().get("/payment/behavior").get_json() == defaults


def test_reset_with_ledgers_makes_a_restarted_sandbox_forget_too(sandbox: Restarts) -> None:
    before = sandbox.start()
    post(before, "/payment/charges", {"order_id": 1, "amount_cents": 700}, "a")
    before.post("/reset")
    assert len(sandbox.start().get("/payment/ledger").get_json()) == 1
    sandbox.start().post("/reset?ledgers=true")
    after = sandbox.start()
    assert after.get("/payment/ledger").get_json() == []
    assert post(after, "/payment/refunds", {"order_id": 1, "charge_id": "ch_1"}, "r").status_code == 404


def test_a_line_torn_by_a_crash_is_dropped_and_later_calls_are_kept(
    sandbox: Restarts, tmp_path: Path,
) -> None:
    post(sandbox.start(), "/payment/charges", {"order_id": 1, "amount_cents": 700}, "a")
    sandbox.stop()
    with (tmp_path / FILE_NAME).open("ab") as journal:
        journal.write(b'{"slot":["payment","charges","b"],"answer":{"sta')
    after = sandbox.start()
    assert post(after, "/payment/charges", {"order_id": 3, "amount_cents": 9}, "c").get_json()["id"] == "ch_2"
    assert [e["idempotency_key"] for e in sandbox.start().get("/payment/ledger").get_json()] == ["a", "c"]


def test_two_sandboxes_cannot_share_a_data_folder(sandbox: Restarts, tmp_path: Path) -> None:
    sandbox.start()
    with pytest.raises(JournalInUse, match="another sandbox process"):
        create_app(tmp_path)


def test_without_a_data_folder_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    client = create_app().test_client()
    post(client, "/payment/charges", {"order_id": 1, "amount_cents": 700}, "a")
    assert list(tmp_path.iterdir()) == []


def test_a_record_taken_before_the_ledgers_were_forgotten_is_not_written_after(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    taken_at = journal.generation
    journal.clear()  # POST /reset?ledgers=true between a call's effect and its journal line
    journal.append({"slot": ["payment", "charges", "k"], "answer": {}, "changes": []}, taken_at)
    journal.append({"slot": ["payment", "charges", "k2"], "answer": {}, "changes": []}, journal.generation)
    assert [record["slot"][2] for record in journal.records()] == ["k2"]
    journal.close()
