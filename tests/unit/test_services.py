"""The rest of services/ in process: admission, health, waiting for payment, concurrent placing, building the
runtime, local steps, and the paths taken without breakers or with a database that fails under a publish."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from celery import Celery

from domain.errors import Overloaded
from domain.model import OrderStatus
from infra.breakers import BreakerPolicy, Breakers
from infra.broker import Publisher
from saga.definition import SagaDefinition, Step
from services.admission import Admission, Verdict, judge
from services.effects import STEP_EFFECTS, StepEffects
from services.executor import start_saga
from services.health import check_health
from services.orders import PlaceOrder, place_order, wait_for_payment
from services.runtime import build_runtime
from services.steps import publish
from tests.unit.engine_fakes import Engine, assert_ended, engine_fixture
from tests.unit.fakes import RecordingPublisher, runtime_for, settings_for

DATABASE_DOWN = "postgresql://postgres@127.0.0.1:1/x"


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


# --- admission -------------------------------------------------------------------------------------------------------
def test_new_orders_are_turned_away_while_the_payment_breaker_is_open(engine: Engine) -> None:
    engine.breakers.open("payment", retry_after_s=7)

    assert judge(engine.rt) == Verdict(False, 7, "payment is unavailable right now", "breaker_open")
    with pytest.raises(Overloaded) as raised:
        Admission().check(engine.rt)
    assert raised.value.retry_after_s == 7


def test_new_orders_are_admitted_once_the_payment_breaker_lets_calls_through(engine: Engine) -> None:
    engine.breakers.open("payment", retry_after_s=7)
    engine.clock.advance(7)

    assert judge(engine.rt).admitted
    Admission().check(engine.rt)


# --- health ----------------------------------------------------------------------------------------------------------
def test_health_is_ok_when_the_database_and_the_broker_answer(engine: Engine) -> None:
    engine.rt.publisher = Publisher(Celery("health", broker="memory://", set_as_current=False), "saga")

    assert check_health(engine.rt) == {"database": "ok", "broker": "ok", "status": "ok"}


def test_health_names_the_database_error_when_it_cannot_be_reached() -> None:
    rt = runtime_for(DATABASE_DOWN)
    try:
        report = check_health(rt)
    finally:
        rt.close()

    assert report["database"] == "error: OperationalError" and report["status"] == "degraded"


# --- waiting for payment ---------------------------------------------------------------------------------------------
def test_waiting_for_payment_returns_once_a_worker_settled_it_polling_less_often_meanwhile(engine: Engine) -> None:
    placed = engine.place()
    pauses: list[float] = []

    def worker_runs_on_the_third_pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            engine.settle()

    view = wait_for_payment(engine.rt, placed.order.id, timeout_s=60, sleep=worker_runs_on_the_third_pause)

    assert view.order.status is OrderStatus.SHIPPED
    assert pauses == pytest.approx([0.05, 0.075, 0.1125])


def test_waiting_for_payment_gives_up_at_the_timeout_with_the_order_as_it_is(engine: Engine) -> None:
    placed = engine.place()

    view = wait_for_payment(engine.rt, placed.order.id, timeout_s=0, sleep=pytest.fail)

    assert view.order.status is OrderStatus.PENDING


# --- placing ---------------------------------------------------------------------------------------------------------
def test_a_concurrent_request_with_the_same_key_that_commits_first_gets_its_order_back(engine: Engine) -> None:
    command = PlaceOrder(customer_id=5, book_id=1, qty=1, idempotency_key="twice")
    first: list[int | None] = []

    def the_other_request_commits_first() -> None:
        first.append(place_order(engine.rt, command).order.id)

    second = place_order(engine.rt, command, admit=the_other_request_commits_first)

    assert not second.created and second.order.id == first[0]
    assert len(engine.publisher.sent) == 1


# --- building the runtime --------------------------------------------------------------------------------------------
def test_the_runtime_is_built_from_settings_with_a_breaker_per_provider(tmp_path: Path) -> None:
    settings = replace(settings_for(f"sqlite:///{tmp_path / 'built.db'}"), breaker_fail_max=4, breaker_reset_s=8,
                       breaker_policies={"payment": {"fail_max": 2, "reset_s": 3}},
                       step_policies={"pay": {"max_attempts": 2}})

    rt = build_runtime(settings)
    rt.close()

    assert isinstance(rt.publisher, Publisher) and rt.publisher.queue == settings.queue
    assert isinstance(rt.breakers, Breakers)
    assert rt.breakers.policies == {"payment": BreakerPolicy(2, 3.0), "delivery": BreakerPolicy(4, 8.0),
                                    "messaging": BreakerPolicy(4, 8.0)}
    assert rt.definitions["order"].step("pay").retry.max_attempts == 2


def test_without_breakers_the_provider_is_called_directly(engine: Engine) -> None:
    engine.rt.breakers = None
    engine.breakers.open("payment", retry_after_s=30)  # not consulted

    placed = engine.play()

    assert_ended(engine, placed, OrderStatus.SHIPPED, "shipped")


def test_a_failed_publish_that_cannot_be_marked_unsent_is_left_to_the_sweeper_without_raising(
        caplog: pytest.LogCaptureFixture) -> None:
    rt = runtime_for(DATABASE_DOWN, RecordingPublisher(fail=True))
    try:
        publish(rt, [(1, "pay")])
    finally:
        rt.close()

    assert "could not mark 1 unsent dispatch(es); the sweeper will re-send them later" in caplog.text


# --- local steps -----------------------------------------------------------------------------------------------------
GIFT = SagaDefinition(kind="gift", version=1, steps=(Step("hold"), Step("ship_now")))
GIFT_STEPS = {**STEP_EFFECTS, "hold": StepEffects(sets_order=OrderStatus.PENDING),
              "ship_now": StepEffects(sets_order=OrderStatus.SHIPPED)}


def test_a_saga_of_local_steps_runs_in_the_transaction_that_starts_it_and_a_step_the_order_refuses_fails(
        engine: Engine) -> None:
    engine.rt.definitions = {**engine.rt.definitions, GIFT.kind: GIFT}
    engine.rt.steps = GIFT_STEPS
    order_id = engine.place().order.id

    with engine.rt.db.transaction() as conn:
        saga, dispatches = start_saga(conn, engine.rt, GIFT, order_id, engine.clock())

    assert dispatches == []
    steps = engine.steps(saga.id)
    assert (steps["hold"].status, steps["ship_now"].status) == ("SUCCEEDED", "FAILED")
    assert steps["ship_now"].error == "order cannot go from PENDING to SHIPPED"
    assert engine.saga(saga.id).status == "COMPENSATED"
    assert engine.order(order_id).status is OrderStatus.PENDING
