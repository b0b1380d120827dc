"""The order saga run by the real services (place_order, run_step, sweep) on SQLite, with fake providers and a
clock that moves only when the test says so: endings, retries and backoff, inline steps, duplicates, the outbox."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from domain.model import OrderStatus
from saga.order_saga import ORDER_SAGA
from services.runtime import configured_definitions
from tests.unit.engine_fakes import BOOK, Engine, assert_ended, engine_fixture, told
from workers.app import poisoned


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


def step_statuses(engine: Engine, saga_id: int) -> dict[str, str]:
    return {name: row.status for name, row in engine.steps(saga_id).items()}


# --- endings ---------------------------------------------------------------------------------------------------------
def test_an_order_ships_with_exactly_one_charge_one_shipment_and_one_message(engine: Engine) -> None:
    placed = engine.play()

    assert_ended(engine, placed, OrderStatus.SHIPPED, "shipped")
    assert engine.saga(placed.saga_id).status == "COMPLETED"
    assert [c.fields for c in engine.providers.charges] == [{"order_id": placed.order.id, "customer_id": 7,
                                                             "amount_cents": BOOK.price_cents}]
    assert len(engine.providers.shipments) == 1
    assert engine.providers.refunds == [] and engine.providers.cancellations == []
    assert set(step_statuses(engine, placed.saga_id).values()) == {"SUCCEEDED"}


def test_a_shipped_order_keeps_its_references_and_the_message_it_sent(engine: Engine) -> None:
    placed = engine.play()

    steps = engine.steps(placed.saga_id)
    assert steps["pay"].provider_ref == engine.providers.charges[0].reference
    assert steps["ship"].provider_ref == engine.providers.shipments[0].reference
    payment, delivery = engine.records(placed.order.id)
    assert (payment.status, payment.charge_ref) == ("CHARGED", engine.providers.charges[0].reference)
    assert (delivery.status, delivery.shipment_ref) == ("SHIPPED", engine.providers.shipments[0].reference)
    sent = engine.notifications(placed.saga_id)["notify"]
    assert (sent.status, sent.text) == ("SENT", told("shipped", placed.order.id))


def test_a_declined_payment_rejects_the_order_and_tells_the_customer_nothing_was_charged(engine: Engine) -> None:
    placed = engine.play("charge", "declined")

    assert_ended(engine, placed, OrderStatus.REJECTED, "not_paid")
    assert engine.saga(placed.saga_id).status == "COMPENSATED"
    assert "payment declined" in engine.order(placed.order.id).reason
    payment, delivery = engine.records(placed.order.id)
    assert (payment.status, payment.charge_ref, delivery) == ("DECLINED", None, None)
    assert engine.providers.charges == [] and engine.providers.refunds == []
    assert step_statuses(engine, placed.saga_id) == {
        "pay": "FAILED", "confirm": "SKIPPED", "ship": "SKIPPED", "mark_shipped": "SKIPPED", "notify": "SKIPPED",
        "notify_outcome": "COMPENSATED"}


def test_a_delivery_refused_after_payment_refunds_once_and_cancels_the_order(engine: Engine) -> None:
    placed = engine.play("ship", "refused")

    assert_ended(engine, placed, OrderStatus.CANCELLED, "refunded")
    assert engine.saga(placed.saga_id).status == "COMPENSATED"
    assert [r.fields["charge_id"] for r in engine.providers.refunds] == [engine.providers.charges[0].reference]
    payment, delivery = engine.records(placed.order.id)
    assert (payment.status, payment.refund_ref, delivery) == ("REFUNDED", engine.providers.refunds[0].reference, None)
    assert "ship failed" in engine.saga(placed.saga_id).reason


# --- retries and backoff ---------------------------------------------------------------------------------------------
def test_a_transient_failure_is_retried_only_once_its_backoff_is_due_with_the_same_key(engine: Engine) -> None:
    engine.providers.script("charge", "transient")
    placed = engine.place()
    engine.deliver()
    pay = engine.steps(placed.saga_id)["pay"]
    assert (pay.status, pay.attempts, pay.dispatched_at) == ("PENDING", 1, None)
    due = pay.available_at
    assert due > engine.clock.now

    engine.clock.advance_to(due - timedelta(milliseconds=1))
    assert engine.sweep().dispatched == 0
    engine.clock.advance_to(due)
    assert engine.sweep().dispatched == 1
    engine.deliver()

    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED
    key = f"saga-{placed.saga_id}:pay"
    assert engine.providers.keys("charge") == [key, key]
    assert len(engine.providers.charges) == 1


def test_each_retry_backs_off_exponentially_up_to_the_cap(engine: Engine) -> None:
    engine.rt.definitions = configured_definitions({"pay": {"base_s": 1, "cap_s": 3}})
    engine.providers.script("charge", "transient", "transient", "transient", "transient")
    placed = engine.place()
    waits = []
    for _ in range(4):
        engine.deliver()
        due = engine.next_due()
        assert due is not None
        waits.append((due - engine.clock.now).total_seconds())
        engine.clock.advance_to(due)
        engine.sweep()
    fulls = [1, 2, 3, 3]  # base * 2**(attempt - 1), at most the cap; jitter takes it down to half at most
    assert all(full / 2 <= wait <= full for full, wait in zip(fulls, waits, strict=True)), waits
    engine.settle()
    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED


def test_a_payment_that_keeps_failing_is_given_up_after_its_attempts_and_the_order_rejected(engine: Engine) -> None:
    attempts = ORDER_SAGA.step("pay").retry.max_attempts
    placed = engine.play("charge", *["transient"] * attempts)

    assert engine.providers.keys("charge") == [f"saga-{placed.saga_id}:pay"] * attempts
    assert engine.steps(placed.saga_id)["pay"].attempts == attempts
    assert_ended(engine, placed, OrderStatus.REJECTED, "not_paid")


def test_a_delivery_that_keeps_failing_is_compensated_by_a_refund(engine: Engine) -> None:
    placed = engine.play("ship", *["transient"] * ORDER_SAGA.step("ship").retry.max_attempts)

    assert_ended(engine, placed, OrderStatus.CANCELLED, "refunded")
    assert len(engine.providers.refunds) == 1 and engine.providers.shipments == []


def test_a_message_that_cannot_be_sent_does_not_undo_a_shipped_order(engine: Engine) -> None:
    placed = engine.play("send", "refused")

    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED
    assert engine.saga(placed.saga_id).status == "COMPLETED"
    failed = engine.notifications(placed.saga_id)["notify"]
    assert failed.status == "FAILED" and "refused" in failed.error
    assert engine.providers.refunds == []


def test_a_message_retried_after_a_transient_failure_is_pending_meanwhile_then_sent(engine: Engine) -> None:
    engine.providers.script("send", "transient")
    placed = engine.place()

    engine.deliver()
    assert engine.notifications(placed.saga_id)["notify"].status == "PENDING"
    engine.settle()

    assert engine.notifications(placed.saga_id)["notify"].status == "SENT"
    assert len(engine.providers.messages) == 1


def test_a_poisoned_step_counts_each_raise_as_a_failed_attempt_then_compensates(engine: Engine) -> None:
    engine.rt.steps = poisoned(engine.rt.steps, {"ship": "raise"})
    placed = engine.place()

    engine.settle()

    ship = engine.steps(placed.saga_id)["ship"]
    assert ship.status == "FAILED" and ship.attempts == ORDER_SAGA.step("ship").retry.max_attempts
    assert ship.error.startswith("RuntimeError: CHAOS: step ship is poisoned")
    assert engine.order(placed.order.id).status is OrderStatus.CANCELLED
    assert len(engine.providers.refunds) == 1


# --- inline steps, duplicates, the outbox ----------------------------------------------------------------------------
@pytest.mark.parametrize(("engine", "runs"), [({"inline_steps": 4}, ["pay"]), ({"inline_steps": 1}, ["pay", "notify"]),
                                              ({"inline_steps": 0}, ["pay", "ship", "notify"])], indirect=["engine"])
def test_inline_steps_decide_how_many_tasks_an_order_takes(engine: Engine, runs: list[str]) -> None:
    placed = engine.play()

    assert engine.runs_of(placed.saga_id) == runs
    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED
    assert len(engine.providers.charges) == len(engine.providers.shipments) == len(engine.providers.messages) == 1


def test_a_worker_shutting_down_finishes_the_running_call_and_sends_the_next_step_through_the_broker(
    engine: Engine,
) -> None:
    placed = engine.place()
    engine.providers.during("charge", engine.rt.draining.set)  # SIGTERM arrives while the charge is under way

    engine.settle()

    assert engine.runs_of(placed.saga_id) == ["pay", "ship", "notify"]  # no step run inline once draining
    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED
    assert len(engine.providers.charges) == len(engine.providers.shipments) == 1


def test_a_duplicate_delivery_is_not_claimed_and_calls_nothing_twice(engine: Engine) -> None:
    placed = engine.place()
    engine.settle()
    calls = list(engine.providers.calls)

    assert engine.run(placed.saga_id, "pay") == "not claimed"
    assert engine.run(placed.saga_id, "notify") == "not claimed"
    assert engine.providers.calls == calls


def test_a_duplicate_delivered_while_the_step_runs_is_not_claimed(engine: Engine) -> None:
    placed = engine.place()
    answers: list[str] = []
    engine.providers.during("charge", lambda: answers.append(engine.run(placed.saga_id, "pay")))

    engine.settle()

    assert answers == ["not claimed"]
    assert engine.providers.keys("charge") == [f"saga-{placed.saga_id}:pay"]


def test_a_repeated_message_does_not_run_a_retry_before_its_backoff_is_due(engine: Engine) -> None:
    engine.providers.script("charge", "transient")
    placed = engine.place()
    engine.deliver()  # the first copy: pay fails and waits for its backoff

    assert engine.run(placed.saga_id, "pay") == "not claimed"  # the broker delivers the message again
    assert engine.providers.keys("charge") == [f"saga-{placed.saga_id}:pay"]
    engine.settle()
    assert len(engine.providers.keys("charge")) == 2


def test_a_repeated_message_does_not_spend_a_breaker_wait_twice(engine: Engine) -> None:
    engine.breakers.open("payment", retry_after_s=20)
    placed = engine.place()
    engine.deliver()

    assert engine.run(placed.saga_id, "pay") == "not claimed"
    assert 20 <= engine.steps(placed.saga_id)["pay"].waited_s < 21
    assert engine.breakers.blocked == ["payment"]


def test_a_message_for_an_unknown_saga_is_not_claimed(engine: Engine) -> None:
    assert engine.run(999, "pay") == "not claimed"
    assert engine.providers.calls == []


def test_an_order_placed_while_the_broker_is_down_is_sent_by_the_sweeper_once_it_is_back(engine: Engine) -> None:
    engine.publisher.fail = True
    placed = engine.place()
    assert engine.sweep().dispatched == 1  # tried, refused again
    assert engine.publisher.sent == []

    engine.publisher.fail = False
    assert engine.sweep().dispatched == 1
    engine.settle()

    assert engine.publisher.sent == [(placed.saga_id, "pay")]
    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED


@pytest.mark.parametrize("engine", [{"inline_steps": 0}], indirect=True)
def test_a_step_whose_publish_failed_mid_saga_is_re_sent_by_the_sweeper(engine: Engine) -> None:
    placed = engine.place()
    engine.publisher.fail = True
    engine.deliver()  # pay runs; publishing ship fails
    assert engine.steps(placed.saga_id)["ship"].dispatched_at is None

    engine.publisher.fail = False
    engine.settle()

    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED
    assert engine.runs_of(placed.saga_id) == ["pay", "ship", "notify"]


def test_a_message_the_broker_lost_is_sent_again_only_after_redispatch_after_s(engine: Engine) -> None:
    placed = engine.place()
    engine.delivered = len(engine.publisher.sent)  # the broker swallowed it
    wait = engine.rt.settings.redispatch_after_s

    engine.clock.advance(wait - 1)
    assert engine.sweep().dispatched == 0
    engine.clock.advance(2)
    assert engine.sweep().dispatched == 1
    engine.deliver()

    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED


def test_step_policies_from_configuration_change_how_often_a_step_is_tried(engine: Engine) -> None:
    engine.rt.definitions = configured_definitions({"*": {"max_attempts": 2}})
    placed = engine.play("charge", "transient", "transient")

    assert engine.steps(placed.saga_id)["pay"].attempts == 2
    assert engine.order(placed.order.id).status is OrderStatus.REJECTED
