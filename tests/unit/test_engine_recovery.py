"""What the engine does when answers are lost, workers vanish and breakers open, with time moved by the test."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from domain.model import OrderStatus
from infra.bulkheads import Bulkheads
from saga.order_saga import ORDER_SAGA
from services.runtime import configured_definitions
from services.steps import perform, record
from services.sweeper import recover
from tests.unit.engine_fakes import Engine, assert_ended, engine_fixture, vanish_after_the_call

OPEN = ("PENDING", "RUNNING", "WAITING")


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


def open_steps(engine: Engine, saga_id: int) -> list[str]:
    return [name for name, row in engine.steps(saga_id).items() if row.status in OPEN]


# --- lost answers ----------------------------------------------------------------------------------------------------
def test_a_lost_answer_is_asked_again_with_the_same_key_and_charges_once(engine: Engine) -> None:
    engine.providers.script("charge", "lost")
    placed = engine.place()

    engine.deliver()
    pay = engine.steps(placed.saga_id)["pay"]
    assert (pay.status, pay.outcome_unknown) == ("PENDING", True)
    engine.settle()

    assert engine.providers.keys("charge") == [f"saga-{placed.saga_id}:pay"] * 2
    assert len(engine.providers.charges) == 1
    assert engine.steps(placed.saga_id)["pay"].outcome_unknown is False  # the second answer told the truth
    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED


def test_a_cancel_waits_for_a_lost_answer_to_be_resolved_then_refunds_it(engine: Engine) -> None:
    engine.providers.script("charge", "lost")
    placed = engine.place()
    engine.deliver()

    view = engine.cancel(placed.order.id)
    assert view.order.status is OrderStatus.PENDING
    assert engine.saga(placed.saga_id).status == "RUNNING"
    engine.settle()

    assert len(engine.providers.charges) == len(engine.providers.refunds) == 1
    assert_ended(engine, placed, OrderStatus.CANCELLED, "cancelled_refunded")


def test_answers_lost_until_attempts_run_out_park_the_saga_for_a_person(engine: Engine) -> None:
    placed = engine.play("charge", *["lost"] * ORDER_SAGA.step("pay").retry.max_attempts)

    saga = engine.saga(placed.saga_id)
    assert saga.status == "FAILED" and "pay outcome unknown after 5 attempts" in saga.reason
    order = engine.order(placed.order.id)
    assert order.status is OrderStatus.PENDING and "parked for support" in order.reason
    assert engine.providers.refunds == [] and engine.providers.messages == []
    assert open_steps(engine, placed.saga_id) == []


# --- leases ----------------------------------------------------------------------------------------------------------
def test_a_step_whose_worker_vanished_is_recovered_after_its_lease_and_charged_once(engine: Engine) -> None:
    placed = engine.place()
    vanish_after_the_call(engine, placed.saga_id, "pay")
    lease = engine.rt.settings.step_lease_s

    engine.clock.advance(lease - 1)
    assert engine.sweep().recovered == 0
    engine.clock.advance(2)
    assert engine.sweep().recovered == 1

    pay = engine.steps(placed.saga_id)["pay"]
    assert (pay.status, pay.attempts, pay.outcome_unknown) == ("PENDING", 1, True)
    assert pay.error.startswith("lease expired")
    assert engine.saga(placed.saga_id).recoveries == 1
    engine.settle()
    assert len(engine.providers.charges) == 1 and engine.steps(placed.saga_id)["pay"].attempts == 2
    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED


class WorkerKilled(BaseException):
    """The process running a step dies (SIGKILL, OOM): nothing after the call runs."""


def kill_the_worker() -> None:
    raise WorkerKilled


def test_a_worker_killed_during_a_step_it_claimed_inline_leaves_it_to_the_sweeper_after_the_lease(
        engine: Engine) -> None:
    placed = engine.place()
    engine.providers.during("ship", kill_the_worker)

    with pytest.raises(WorkerKilled):
        engine.deliver()  # pay succeeds, and ship, claimed in the same task, dies with it
    assert engine.steps(placed.saga_id)["ship"].status == "RUNNING"
    engine.settle()

    assert engine.saga(placed.saga_id).recoveries == 1
    assert len(engine.providers.charges) == len(engine.providers.shipments) == 1
    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED


def test_a_lost_refund_is_asked_again_with_the_same_key_and_refunds_once(engine: Engine) -> None:
    engine.providers.script("refund", "lost")

    placed = engine.play("ship", "refused")

    assert len(engine.providers.keys("refund")) == 2 and len(set(engine.providers.keys("refund"))) == 1
    assert len(engine.providers.refunds) == 1
    assert_ended(engine, placed, OrderStatus.CANCELLED, "refunded")


def test_a_worker_that_comes_back_after_its_lease_was_taken_records_nothing(engine: Engine) -> None:
    placed = engine.place()
    attempt = vanish_after_the_call(engine, placed.saga_id, "pay")
    engine.clock.advance(engine.rt.settings.step_lease_s + 1)
    engine.sweep()
    before = engine.steps(placed.saga_id)["pay"]

    dispatches, follow = record(engine.rt, attempt, *perform(engine.rt, attempt.context, attempt.provider))

    assert (dispatches, follow) == ([], None)
    assert engine.steps(placed.saga_id)["pay"] == before


def test_recovering_a_step_that_still_holds_its_lease_or_does_not_exist_changes_nothing(engine: Engine) -> None:
    placed = engine.place()
    vanish_after_the_call(engine, placed.saga_id, "pay")

    assert recover(engine.rt, placed.saga_id, "pay") == "gone"
    assert recover(engine.rt, 999, "pay") == "gone"
    assert engine.steps(placed.saga_id)["pay"].status == "RUNNING"


def test_a_saga_recovered_too_often_is_parked_with_the_reason_and_its_order_flagged(engine: Engine) -> None:
    engine.rt.settings = replace(engine.rt.settings, max_recoveries=1)
    placed = engine.place()
    lease = engine.rt.settings.step_lease_s
    vanish_after_the_call(engine, placed.saga_id, "pay")
    engine.clock.advance(lease + 1)
    assert engine.sweep().recovered == 1
    engine.clock.advance(60)  # past the retry's backoff
    engine.sweep()

    vanish_after_the_call(engine, placed.saga_id, "pay")
    engine.clock.advance(lease + 1)
    report = engine.sweep()

    assert (report.recovered, report.parked) == (0, 1)
    saga = engine.saga(placed.saga_id)
    assert saga.status == "FAILED" and saga.reason.startswith("parked after 2 recoveries")
    assert "parked for support" in engine.order(placed.order.id).reason
    assert open_steps(engine, placed.saga_id) == []
    assert len(engine.providers.charges) == 1


# --- breakers --------------------------------------------------------------------------------------------------------
def test_an_open_breaker_parks_the_step_without_spending_an_attempt_and_it_runs_after_the_wait(
        engine: Engine) -> None:
    engine.breakers.open("payment", retry_after_s=20)
    placed = engine.place()

    engine.deliver()
    pay = engine.steps(placed.saga_id)["pay"]
    assert (pay.status, pay.attempts) == ("WAITING", 0)
    assert 20 <= pay.waited_s < 21
    assert engine.providers.calls == []
    engine.clock.advance(19)
    assert engine.sweep().dispatched == 0
    engine.settle()

    assert engine.steps(placed.saga_id)["pay"].attempts == 1
    assert len(engine.providers.charges) == 1
    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED


def test_a_breaker_open_longer_than_the_step_may_wait_fails_the_step_and_compensates(engine: Engine) -> None:
    engine.breakers.open("delivery", retry_after_s=ORDER_SAGA.step("ship").max_wait_s + 1)
    placed = engine.play()

    ship = engine.steps(placed.saga_id)["ship"]
    assert ship.status == "FAILED" and "circuit open" in ship.error
    assert "ship failed: delivery unavailable for over 600s" in engine.saga(placed.saga_id).reason
    assert engine.providers.shipments == [] and len(engine.providers.refunds) == 1
    assert_ended(engine, placed, OrderStatus.CANCELLED, "refunded")
    assert open_steps(engine, placed.saga_id) == []


def test_waits_add_up_and_a_step_that_waited_its_longest_fails_for_good(engine: Engine) -> None:
    engine.rt.definitions = configured_definitions({"pay": {"max_wait_s": 25}})
    engine.breakers.open("payment", retry_after_s=10, for_s=float("inf"))
    placed = engine.play()

    pay = engine.steps(placed.saga_id)["pay"]
    assert pay.status == "FAILED" and 20 <= pay.waited_s <= 25
    assert "payment unavailable for over 25s" in engine.saga(placed.saga_id).reason
    assert engine.breakers.blocked == ["payment"] * 3
    assert_ended(engine, placed, OrderStatus.REJECTED, "not_paid")
    assert open_steps(engine, placed.saga_id) == []


def test_a_message_blocked_for_too_long_is_dropped_and_the_order_still_ships(engine: Engine) -> None:
    engine.breakers.open("messaging", retry_after_s=ORDER_SAGA.step("notify").max_wait_s + 1)
    placed = engine.play()

    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED
    assert engine.saga(placed.saga_id).status == "COMPLETED"
    assert engine.notifications(placed.saga_id)["notify"].status == "FAILED"
    assert engine.providers.messages == []


# --- bulkheads -------------------------------------------------------------------------------------------------------
def test_a_full_bulkhead_parks_the_step_without_spending_an_attempt_and_it_runs_once_a_slot_frees(
        engine: Engine) -> None:
    engine.rt.bulkheads = Bulkheads({"payment": 1}, retry_after_s=1.0)
    placed = engine.place()

    with engine.rt.bulkheads.slot("payment"):  # another saga's charge holds the only slot
        engine.deliver()
        pay = engine.steps(placed.saga_id)["pay"]
        assert (pay.status, pay.attempts) == ("WAITING", 0)
        assert "calls in flight are at this process's cap" in pay.error
        assert engine.providers.calls == []
    engine.settle()

    assert engine.steps(placed.saga_id)["pay"].attempts == 1
    assert len(engine.providers.charges) == 1
    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED


def test_a_full_messaging_bulkhead_does_not_hold_up_payments(engine: Engine) -> None:
    engine.rt.bulkheads = Bulkheads({"messaging": 1, "payment": 1}, retry_after_s=1.0)
    placed = engine.place()

    with engine.rt.bulkheads.slot("messaging"):  # a hanging messaging call
        engine.deliver()
        steps = engine.steps(placed.saga_id)
        assert steps["pay"].status == steps["ship"].status == "SUCCEEDED"
        assert steps["notify"].status == "WAITING"
    engine.settle()

    assert engine.steps(placed.saga_id)["notify"].status == "SUCCEEDED"
