"""Cancelling orders through the real services: before, during and after the order saga, and repeated."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.errors import InvalidTransition, OrderNotFound, SagaNeedsSupport
from domain.model import OrderStatus
from saga.order_saga import CANCEL_SAGA
from services.steps import claim, perform, publish, record
from tests.unit.engine_fakes import Engine, assert_ended, engine_fixture, told


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


def cancel_saga_of(engine: Engine, order_id: int) -> object:
    return next(s for s in engine.sagas(order_id) if s.kind == CANCEL_SAGA.kind)


def shipped_order(engine: Engine) -> int:
    placed = engine.play()
    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED
    return placed.order.id


# --- while the order saga runs ---------------------------------------------------------------------------------------
def test_a_cancel_before_payment_runs_cancels_without_charging_and_says_so(engine: Engine) -> None:
    placed = engine.place()

    view = engine.cancel(placed.order.id, "changed my mind")
    engine.settle()

    assert view.order.status is OrderStatus.CANCELLED
    assert engine.order(placed.order.id).reason == "changed my mind"
    assert engine.providers.charges == []
    assert engine.providers.messages == [told("cancelled", placed.order.id)]
    assert engine.saga(placed.saga_id).status == "COMPENSATED"
    assert engine.runs[0] == (placed.saga_id, "pay", "not claimed")  # the pay message, delivered late


def test_a_cancel_while_the_charge_is_in_flight_refunds_it_exactly_once(engine: Engine) -> None:
    placed = engine.place()
    engine.providers.during("charge", lambda: engine.cancel(placed.order.id))

    engine.settle()

    assert len(engine.providers.charges) == 1
    assert [r.fields["charge_id"] for r in engine.providers.refunds] == [engine.providers.charges[0].reference]
    assert engine.providers.shipments == []
    assert_ended(engine, placed, OrderStatus.CANCELLED, "cancelled_refunded")


def test_a_cancel_while_shipping_undoes_the_shipment_and_the_charge(engine: Engine) -> None:
    placed = engine.place()
    engine.providers.during("ship", lambda: engine.cancel(placed.order.id))

    engine.settle()

    assert [c.fields["shipment_id"] for c in engine.providers.cancellations] == [
        engine.providers.shipments[0].reference]
    assert len(engine.providers.refunds) == 1
    assert_ended(engine, placed, OrderStatus.CANCELLED, "cancelled_refunded")


def test_a_cancel_while_the_payment_provider_is_blocked_cancels_without_charging(engine: Engine) -> None:
    placed = engine.place()
    engine.breakers.open("payment", retry_after_s=5)

    view = engine.cancel(placed.order.id)
    engine.settle()

    assert view.order.status is OrderStatus.CANCELLED
    assert engine.providers.charges == []
    assert engine.providers.messages == [told("cancelled", placed.order.id)]


def test_a_cancel_while_the_charge_waits_for_the_breaker_cancels_without_charging(engine: Engine) -> None:
    engine.breakers.open("payment", retry_after_s=5)
    placed = engine.place()
    engine.deliver()
    assert engine.steps(placed.saga_id)["pay"].status == "WAITING"

    engine.cancel(placed.order.id)
    engine.settle()

    assert engine.providers.charges == []
    assert_ended(engine, placed, OrderStatus.CANCELLED, "cancelled")


def test_a_cancel_that_arrives_while_the_charge_is_blocked_by_the_breaker_cancels_without_charging(
        engine: Engine) -> None:
    placed = engine.place()
    engine.delivered = len(engine.publisher.sent)
    engine.breakers.open("payment", retry_after_s=5)
    attempt = claim(engine.rt, placed.saga_id, "pay", "task-1")  # pay is RUNNING: the cancel waits for its end
    assert attempt is not None
    engine.cancel(placed.order.id)

    event, reply = perform(engine.rt, attempt.context, attempt.provider)  # the breaker refuses: no call made
    publish(engine.rt, record(engine.rt, attempt, event, reply)[0])
    engine.settle()

    assert engine.providers.charges == []
    assert_ended(engine, placed, OrderStatus.CANCELLED, "cancelled")


def test_repeated_cancels_while_running_compensate_once(engine: Engine) -> None:
    placed = engine.place()
    engine.providers.during("charge", lambda: [engine.cancel(placed.order.id) for _ in range(3)])

    engine.settle()
    engine.cancel(placed.order.id)
    engine.settle()

    assert len(engine.providers.refunds) == 1 and len(engine.providers.messages) == 1
    assert [s.kind for s in engine.sagas(placed.order.id)] == ["order"]


@pytest.mark.parametrize("engine", [{"inline_steps": 0}], indirect=True)
def test_a_cancel_while_a_failure_is_being_compensated_changes_nothing(engine: Engine) -> None:
    engine.providers.script("ship", "refused")
    placed = engine.place()
    engine.deliver(count=2)  # pay; ship refused; the refund is published, not yet run
    assert engine.saga(placed.saga_id).status == "COMPENSATING"

    engine.cancel(placed.order.id)
    engine.settle()

    assert len(engine.providers.refunds) == 1
    assert_ended(engine, placed, OrderStatus.CANCELLED, "refunded")


# --- after the order saga ended --------------------------------------------------------------------------------------
def test_a_cancel_after_shipping_runs_the_cancel_saga(engine: Engine) -> None:
    order_id = shipped_order(engine)

    engine.cancel(order_id)
    engine.settle()

    saga = cancel_saga_of(engine, order_id)
    assert saga.status == "COMPLETED"
    assert list(engine.steps(saga.id)) == ["cancel_delivery", "cancel_payment", "mark_cancelled", "notify_cancelled"]
    assert len(engine.providers.cancellations) == 1 and len(engine.providers.refunds) == 1
    payment, delivery = engine.records(order_id)
    assert (payment.status, delivery.status) == ("REFUNDED", "CANCELLED")
    assert delivery.cancel_ref == engine.providers.cancellations[0].reference
    assert engine.order(order_id).status is OrderStatus.CANCELLED
    assert engine.providers.messages[-1] == told("cancelled_refunded", order_id, CANCEL_SAGA)


def test_cancelling_a_cancelled_order_again_refunds_nothing_more(engine: Engine) -> None:
    order_id = shipped_order(engine)
    engine.cancel(order_id)
    engine.cancel(order_id)  # while the cancel saga runs
    engine.settle()

    view = engine.cancel(order_id)
    engine.settle()

    assert view.order.status is OrderStatus.CANCELLED
    assert len(engine.providers.refunds) == 1
    assert [s.kind for s in engine.sagas(order_id)] == ["order", "cancel"]


def test_a_repeat_cancel_of_an_order_whose_cancel_saga_is_parked_needs_support(engine: Engine) -> None:
    order_id = shipped_order(engine)
    engine.providers.script("cancel", "refused")
    engine.cancel(order_id)
    engine.settle()
    saga = cancel_saga_of(engine, order_id)
    assert saga.status == "FAILED"

    with pytest.raises(SagaNeedsSupport) as raised:
        engine.cancel(order_id)

    assert raised.value.saga_id == saga.id
    order = engine.order(order_id)
    assert order.status is OrderStatus.SHIPPED
    assert f"cancel saga {saga.id} is parked for support" in order.reason
    assert engine.providers.refunds == []


def test_a_cancel_of_an_order_whose_saga_is_parked_needs_support(engine: Engine) -> None:
    placed = engine.play("charge", *["lost"] * 5)
    assert engine.saga(placed.saga_id).status == "FAILED"

    with pytest.raises(SagaNeedsSupport):
        engine.cancel(placed.order.id)


def test_a_rejected_order_cannot_be_cancelled(engine: Engine) -> None:
    placed = engine.play("charge", "declined")

    with pytest.raises(InvalidTransition):
        engine.cancel(placed.order.id)


def test_cancelling_an_unknown_order_is_refused(engine: Engine) -> None:
    with pytest.raises(OrderNotFound):
        engine.cancel(404)
