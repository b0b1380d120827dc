"""A state machine drives the HTTP API (in process, the real services on SQLite, the engine run inline by the
fakes' broker and beat) through random sequences of placing orders, cancelling them, reading them and a customer's
orders, and support's actions on sagas (retry, resume, skip, compensate, cancel), while providers sometimes
decline, refuse, fail or lose their answer, so sagas get parked for support to act on.

After each sequence, once the engine has settled, the chaos suite's invariants hold (tests/chaos/conftest.py
check_invariants): no accepted order lost, every saga ended or parked with a reason, no order charged or shipped
twice, every refund of a charge of that order and made once, an undone order's charge refunded, a kept order's not.
Every answer on the way is the documented one: never a 500.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from api.app import create_app
from infra.providers import ProviderError, ProviderReply
from saga.order_saga import ORDER_SAGA
from tests.support import bearer
from tests.unit.engine_fakes import Engine, FakeProviders, make_engine

CUSTOMERS = st.integers(1, 3)
PAY_TRIES = ORDER_SAGA.step("pay").retry.max_attempts
ORDER_STEPS = [step.name for step in ORDER_SAGA.steps]
FAULTS = st.sampled_from(["transient", "lost", "refused"])
TERMINAL, PARKED = ("COMPLETED", "COMPENSATED"), "FAILED"
ORDER_STATUSES = {"PENDING", "PAID", "SHIPPED", "CANCELLED", "REJECTED"}


class ReplayingProviders(FakeProviders):
    """The fake providers, answering a key that already took effect with its first answer, as a real idempotent
    provider does, unless the network fails the call (transient, lost). FakeProviders lets a scripted refusal
    override the replay: a provider that refuses an effect it made, which a random script would otherwise make."""

    def handle(self, operation: str, key: str, **fields: Any) -> ProviderReply:
        entry = self.ledgers[operation].get(key)
        if entry is None:
            return super().handle(operation, key, **fields)
        self.calls.append((operation, key))
        outcome = self._script[operation].pop(0) if self._script[operation] else "ok"
        if outcome in ("transient", "lost"):
            raise ProviderError(f"{operation}: the network failed", uncertain=outcome == "lost")
        return ProviderReply(entry.reference, {"id": entry.reference, **entry.fields})


class OrdersThroughTheApi(RuleBasedStateMachine):
    """One fresh database, fake providers and one API app a run."""

    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="bookmarket-stateful-"))
        self.engine: Engine = make_engine(self.folder)
        self.engine.providers = self.engine.rt.providers = ReplayingProviders()  # type: ignore[assignment]
        # no pacing of POST /orders by answer time (ADMISSION_TARGET_MS): on a busy machine it answers a fast 503,
        # which is admission's business (tests/unit/test_admission.py), not this machine's
        settings = replace(self.engine.rt.settings, admission_target_ms=0)
        self.client: FlaskClient = create_app(settings, runtime=self.engine.rt).test_client()
        self.accepted: dict[int, int] = {}  # order id -> customer id
        self.vouched: set[int] = set()  # orders whose ledgers support answered for by hand

    # --- the storefront ----------------------------------------------------------------------------------------
    @rule(target=orders, customer_id=CUSTOMERS, book_id=st.integers(1, 3), qty=st.integers(1, 2),
          key=st.none() | st.sampled_from(["k1", "k2"]))
    def place(self, customer_id: int, book_id: int, qty: int, key: str | None) -> int:
        self.engine.clock.advance(0.001)  # time moves between calls, as it does
        headers = {**bearer(), **({"Idempotency-Key": f"{customer_id}-{book_id}-{qty}-{key}"} if key else {})}
        answer = self.client.post("/orders", json={"customer_id": customer_id, "book_id": book_id, "qty": qty},
                                  headers=headers)
        body = self.ok(answer, 202)
        assert body["customer_id"] == customer_id and body["status"] in ORDER_STATUSES
        self.accepted[body["id"]] = customer_id
        return int(body["id"])

    @rule(order_id=orders, reason=st.none() | st.just("changed my mind"))
    def cancel(self, order_id: int, reason: str | None) -> None:
        self.engine.clock.advance(0.001)
        answer = self.client.post(f"/orders/{order_id}/cancel", json={"reason": reason} if reason else {},
                                  headers=bearer())
        self.ok(answer, 202, 409)

    @rule(order_id=orders)
    def read_order(self, order_id: int) -> None:
        body = self.ok(self.client.get(f"/orders/{order_id}", headers=bearer()), 200)
        assert body["id"] == order_id and body["status"] in ORDER_STATUSES
        assert body["needs_support"] == any(s["status"] == PARKED for s in body["sagas"])

    @rule(customer_id=CUSTOMERS)
    def read_customer_orders(self, customer_id: int) -> None:
        answer = self.client.get(f"/customers/{customer_id}/orders?page_size=100", headers=bearer())
        listed = {row["order_id"] for row in self.ok(answer, 200)}
        assert listed == {o for o, c in self.accepted.items() if c == customer_id}

    # --- the providers and the engine --------------------------------------------------------------------------
    @rule(operation=st.sampled_from(["charge", "refund", "ship", "cancel", "send"]),
          faults=st.lists(FAULTS, min_size=1, max_size=PAY_TRIES + 1), declined=st.booleans())
    def providers_fail(self, operation: str, faults: list[str], declined: bool) -> None:
        outcomes = ["declined"] if declined and operation == "charge" else faults
        self.engine.providers.script(operation, *outcomes)  # type: ignore[arg-type]

    @rule(target=orders, operation=st.sampled_from(["charge", "refund", "ship"]), customer_id=CUSTOMERS)
    def place_while_a_provider_is_dark(self, operation: str, customer_id: int) -> int:
        """Every call of `operation` times out (effect or not) while an order runs: its step runs out of tries with
        the outcome unknown and the saga is parked for support (a refund: after the shipment was refused)."""
        providers = self.engine.providers
        providers.script(operation, *["lost"] * (PAY_TRIES * 2))
        if operation == "refund":
            providers.script("ship", "refused")
        order_id = self.place(customer_id, 1, 1, None)
        self.engine.settle()
        providers._script[operation].clear()  # the provider is back
        return order_id

    @rule(count=st.integers(1, 4))
    def deliver(self, count: int) -> None:
        self.engine.clock.advance(0.001)
        self.engine.deliver(count)

    @rule()
    def settle(self) -> None:
        self.engine.settle()

    # --- support -----------------------------------------------------------------------------------------------
    @rule(order_id=orders, which=st.integers(0, 1),
          action=st.sampled_from(["retry", "resume", "skip", "compensate", "cancel"]),
          step=st.sampled_from(ORDER_STEPS))
    def support_acts(self, order_id: int, which: int, action: str, step: str) -> None:
        sagas = self.ok(self.client.get(f"/orders/{order_id}", headers=bearer()), 200)["sagas"]
        saga = sagas[min(which, len(sagas) - 1)]
        self.act(saga["id"], order_id, action, step)

    @rule(index=st.integers(0, 3), action=st.sampled_from(["retry", "resume", "skip", "compensate", "cancel"]),
          step=st.sampled_from(ORDER_STEPS))
    def support_acts_on_a_parked_saga(self, index: int, action: str, step: str) -> None:
        parked = self.ok(self.client.get("/admin/sagas?status=FAILED", headers=bearer("viewer")), 200)
        if not parked:
            event("support found no parked saga")
            return
        saga = parked[index % len(parked)]
        self.act(saga["id"], saga["order_id"], action, step)

    def act(self, saga_id: int, order_id: int, action: str, step: str) -> None:
        """One support action; an order whose ledgers support vouched for is noted (skip: a step done by hand;
        compensate or cancel while a step's outcome is unknown: taken as not done, as the README says)."""
        self.engine.clock.advance(0.001)
        timeline = self.ok(self.client.get(f"/admin/sagas/{saga_id}", headers=bearer("viewer")), 200)
        unknown = any(s["outcome_unknown"] for s in timeline["steps"])
        body = {"reason": "support looked into it", **({"step": step} if action == "resume" else {})}
        answer = self.client.post(f"/admin/sagas/{saga_id}/{action}", json=body, headers=bearer("support"))
        self.ok(answer, 200, 409, 422)
        event(f"support {action} of a {timeline['state'].split(':')[0]} saga: {answer.status_code}")
        if answer.status_code == 409 and action != "resume":  # resume: also refused for the step chosen
            assert action not in timeline["actions"], answer.get_json()
        if answer.status_code == 200 and (action == "skip" or (unknown and action in ("compensate", "cancel"))):
            self.vouched.add(order_id)

    @rule(order_id=consumes(orders))
    def support_reads_the_timeline(self, order_id: int) -> None:
        for saga in self.ok(self.client.get(f"/orders/{order_id}", headers=bearer()), 200)["sagas"]:
            timeline = self.ok(self.client.get(f"/admin/sagas/{saga['id']}", headers=bearer("viewer")), 200)
            assert timeline["id"] == saga["id"]

    # --- what must hold ----------------------------------------------------------------------------------------
    @invariant()
    def no_accepted_order_is_lost(self) -> None:
        with self.engine.rt.db.reading() as conn:
            found = {row.id for row in conn.exec_driver_sql("SELECT id FROM orders")}
        assert set(self.accepted) <= found

    def teardown(self) -> None:
        try:
            self.engine.settle()
            problems = self.violations()
            assert not problems, "\n".join(problems)
        finally:
            self.engine.rt.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    def ok(self, answer: Any, *statuses: int) -> Any:
        assert answer.status_code in statuses, (answer.status_code, answer.get_data(as_text=True))
        if answer.status_code >= 400:
            assert answer.mimetype == "application/problem+json"
        return answer.get_json()

    def violations(self) -> list[str]:
        """check_invariants of the chaos suite, read from the database and the fake providers' ledgers."""
        with self.engine.rt.db.reading() as conn:
            orders = {r.id: r for r in conn.exec_driver_sql("SELECT id, status FROM orders")}
            sagas = conn.exec_driver_sql("SELECT id, kind, order_id, status, reason FROM sagas").all()
            steps = conn.exec_driver_sql("SELECT saga_id, name, attempts, max_attempts FROM saga_steps").all()
        problems: list[str] = []
        by_order: dict[int, list[Any]] = defaultdict(list)
        for saga in sagas:
            by_order[saga.order_id].append(saga)
            if saga.status == PARKED and not (saga.reason or "").strip():
                problems.append(f"saga {saga.id} is parked without a reason")
            elif saga.status not in (*TERMINAL, PARKED):
                problems.append(f"saga {saga.id} ({saga.kind}) is still {saga.status}")
        for order_id in self.accepted:
            if not any(s.kind == "order" for s in by_order[order_id]):
                problems.append(f"accepted order {order_id} has no order saga")
        for step in steps:
            if step.attempts > step.max_attempts:
                problems.append(f"saga {step.saga_id} step {step.name}: {step.attempts} > {step.max_attempts} tries")
        for order_id, order in orders.items():
            problems += self.books_of(order_id, order.status, by_order[order_id])
        return problems

    def books_of(self, order_id: int, status: str, sagas: list[Any]) -> list[str]:
        """Money and goods of one order: at most one charge and one shipment, refunds of its own charges once."""
        providers = self.engine.providers
        charged = [e.reference for e in providers.charges if e.fields["order_id"] == order_id]
        refunded = Counter(e.fields["charge_id"] for e in providers.refunds if e.fields["order_id"] == order_id)
        shipped = [e.reference for e in providers.shipments if e.fields["order_id"] == order_id]
        unshipped = Counter(e.fields["shipment_id"] for e in providers.cancellations
                            if e.fields["order_id"] == order_id)
        parked = any(s.status == PARKED for s in sagas)
        problems = []
        if len(charged) > 1 or len(shipped) > 1:
            problems.append(f"order {order_id} ({status}): charged {charged}, shipped {shipped}")
        if any(n > 1 for n in refunded.values()) or set(refunded) - set(charged):
            problems.append(f"order {order_id} ({status}): refunds {dict(refunded)} of charges {charged}")
        if order_id in self.vouched:  # support decided what a step did: the ledgers need not agree
            return problems
        if status in ("PAID", "SHIPPED") and (len(charged) != 1 or (refunded and not parked)):
            problems.append(f"order {order_id} is {status}: charges {charged}, refunds {dict(refunded)}")
        if status in ("CANCELLED", "REJECTED"):
            if [c for c in charged if refunded[c] != 1] or [s for s in shipped if unshipped[s] != 1]:
                problems.append(f"order {order_id} is {status}: charges {charged} refunds {dict(refunded)}, "
                                f"shipments {shipped} cancellations {dict(unshipped)}")
        return problems


OrdersThroughTheApi.TestCase.settings = settings(
    # 30 sequences of up to 25 calls: about 6 s; HYPOTHESIS_STATEFUL_EXAMPLES=500 for a longer hunt (about 2 min)
    max_examples=int(os.environ.get("HYPOTHESIS_STATEFUL_EXAMPLES", "30")), stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_orders_through_the_api_keep_the_chaos_invariants = OrdersThroughTheApi.TestCase


def test_resume_is_refused_once_the_compensation_has_begun_even_when_it_failed_with_its_outcome_unknown() -> None:
    """Found by the machine: a saga parked in its refund (outcome unknown: the refund may have gone through) was
    resumed forward and shipped, refund and all. Resume must refuse it, as its timeline's actions say."""
    machine = OrdersThroughTheApi()
    try:
        order_id = machine.place_while_a_provider_is_dark("refund", customer_id=2)
        saga = machine.ok(machine.client.get(f"/orders/{order_id}", headers=bearer()), 200)["sagas"][0]
        timeline = machine.ok(machine.client.get(f"/admin/sagas/{saga['id']}", headers=bearer("viewer")), 200)
        assert timeline["state"] == "FAILED:cancel_payment" and timeline["actions"] == ["retry", "skip"]
        answer = machine.client.post(f"/admin/sagas/{saga['id']}/resume", json={"reason": "go on", "step": "ship"},
                                     headers=bearer("support"))
        assert machine.ok(answer, 409)["detail"].endswith("its compensation has begun; retry or skip the failed "
                                                            "compensation instead")
        machine.engine.settle()
        assert machine.violations() == []
    finally:
        machine.teardown()


def test_a_completed_order_saga_whose_order_is_being_cancelled_does_not_offer_cancel_again() -> None:
    """Found by the machine: after the customer's cancel started the cancel saga, the completed order saga's
    timeline still offered `cancel`, which the action then refused (409): the offer must follow the refusal."""
    machine = OrdersThroughTheApi()
    try:
        order_id = machine.place(1, 1, 1, None)
        machine.engine.settle()
        saga = machine.ok(machine.client.get(f"/orders/{order_id}", headers=bearer()), 200)["sagas"][0]
        before = machine.ok(machine.client.get(f"/admin/sagas/{saga['id']}", headers=bearer("viewer")), 200)
        assert before["state"] == "COMPLETED" and "cancel" in before["actions"]
        machine.cancel(order_id, None)
        after = machine.ok(machine.client.get(f"/admin/sagas/{saga['id']}", headers=bearer("viewer")), 200)
        assert "cancel" not in after["actions"]
        answer = machine.client.post(f"/admin/sagas/{saga['id']}/cancel", json={"reason": "again"},
                                     headers=bearer("support"))
        assert machine.ok(answer, 409)["detail"].endswith("its order already has a cancel saga")
        machine.engine.settle()
        assert machine.violations() == []
    finally:
        machine.teardown()


def test_a_cancel_after_a_resume_past_a_step_of_unknown_outcome_undoes_that_step_too() -> None:
    """Found by the machine: `ship` timed out for good (it had shipped: the answers were lost) and parked the saga;
    support resumed it from `pay`, and the customer cancelled before `ship` ran again. The cancel skipped the
    still-unknown `ship` and the order ended CANCELLED and refunded with its parcel on the way. The saga now runs
    forward to the step of unknown outcome first (same key: it learns the shipment), then undoes it with the rest."""
    machine = OrdersThroughTheApi()
    try:
        order_id = machine.place_while_a_provider_is_dark("ship", customer_id=2)
        saga = machine.ok(machine.client.get(f"/orders/{order_id}", headers=bearer()), 200)["sagas"][0]
        answer = machine.client.post(f"/admin/sagas/{saga['id']}/resume", json={"reason": "provider back",
                                                                                 "step": "pay"},
                                     headers=bearer("support"))
        machine.ok(answer, 200)
        machine.cancel(order_id, None)  # before the resumed saga ran anything
        machine.engine.settle()
        order = machine.ok(machine.client.get(f"/orders/{order_id}", headers=bearer()), 200)
        assert order["status"] == "CANCELLED"
        timeline = machine.ok(machine.client.get(f"/admin/sagas/{saga['id']}", headers=bearer("viewer")), 200)
        statuses = {step["name"]: step["status"] for step in timeline["steps"]}
        assert statuses["ship"] == "SUCCEEDED" and statuses["cancel_delivery"] == "COMPENSATED"
        assert machine.violations() == []
    finally:
        machine.teardown()
