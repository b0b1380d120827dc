"""Every transition of the pure orchestrator, on plain state objects."""
from __future__ import annotations

import pytest

from domain.model import OrderStatus
from saga.definition import DefinitionError, RetryPolicy, SagaDefinition, Step
from saga.orchestrator import (
    BeginCompensation,
    CancelRequested,
    FinishSaga,
    RunStep,
    SagaState,
    SagaStatus,
    Started,
    StepBlocked,
    StepFailed,
    StepState,
    StepStatus,
    StepSucceeded,
    WaitStep,
    decide,
)
from saga.order_saga import ORDER_SAGA, order_ending, order_outcome

S = StepStatus


def state(status: SagaStatus = SagaStatus.RUNNING, cancel: bool = False, **steps: tuple[StepStatus, int]) -> SagaState:
    return SagaState(status, {n: StepState(n, st, att) for n, (st, att) in steps.items()}, cancel)


def test_a_new_saga_runs_pay_first() -> None:
    assert decide(ORDER_SAGA, state(), Started()) == [RunStep("pay")]


@pytest.mark.parametrize("done, following", [("pay", "confirm"), ("confirm", "ship"), ("ship", "mark_shipped"),
                                             ("mark_shipped", "notify")])
def test_each_success_runs_the_next_step(done: str, following: str) -> None:
    assert decide(ORDER_SAGA, state(**{done: (S.RUNNING, 1)}), StepSucceeded(done)) == [RunStep(following)]


def test_success_of_the_last_step_completes_the_saga() -> None:
    assert decide(ORDER_SAGA, state(notify=(S.RUNNING, 1)), StepSucceeded("notify")) == [
        FinishSaga(SagaStatus.COMPLETED)]


def test_a_transient_failure_with_attempts_left_retries_with_backoff() -> None:
    commands = decide(ORDER_SAGA, state(pay=(S.RUNNING, 2)), StepFailed("pay", "503", jitter=0.0))
    assert commands == [RunStep("pay", ORDER_SAGA.step("pay").retry.delay(2, 0.0))]
    assert commands[0].delay_s > 0


def test_a_declined_payment_is_not_retried_and_tells_the_customer_with_nothing_to_undo() -> None:
    commands = decide(ORDER_SAGA, state(pay=(S.RUNNING, 1)), StepFailed("pay", "declined", permanent=True))
    assert commands == [BeginCompensation("pay failed: declined"), RunStep("notify_outcome")]


def test_the_closing_message_ends_the_undone_saga_whether_it_is_sent_or_not() -> None:
    telling = state(SagaStatus.COMPENSATING, pay=(S.FAILED, 1), notify_outcome=(S.RUNNING, 1))
    assert decide(ORDER_SAGA, telling, StepSucceeded("notify_outcome")) == [FinishSaga(SagaStatus.COMPENSATED)]
    limit = ORDER_SAGA.step("notify_outcome").retry.max_attempts
    spent = state(SagaStatus.COMPENSATING, pay=(S.FAILED, 1), notify_outcome=(S.RUNNING, limit))
    assert decide(ORDER_SAGA, spent, StepFailed("notify_outcome", "503")) == [FinishSaga(SagaStatus.COMPENSATED)]


def test_a_closing_message_blocked_past_its_longest_wait_still_ends_the_saga_compensated() -> None:
    waited = ORDER_SAGA.step("notify_outcome").max_wait_s
    current = SagaState(SagaStatus.COMPENSATING, {
        "pay": StepState("pay", S.FAILED, 1),
        "notify_outcome": StepState("notify_outcome", S.RUNNING, 1, waited_s=waited)})
    assert decide(ORDER_SAGA, current, StepBlocked("notify_outcome", 5.0)) == [FinishSaga(SagaStatus.COMPENSATED)]


def test_a_cancelled_saga_whose_provider_is_unavailable_compensates_instead_of_waiting() -> None:
    current = state(cancel=True, pay=(S.SUCCEEDED, 1), ship=(S.RUNNING, 1))
    assert decide(ORDER_SAGA, current, StepBlocked("ship", 30.0)) == [BeginCompensation(None),
                                                                       RunStep("cancel_payment")]


def test_a_closing_step_must_be_a_best_effort_compensation() -> None:
    tell = Step("tell", provider="messaging", can_undo=False)
    with pytest.raises(DefinitionError, match="closing step 'tell'"):
        SagaDefinition("bad", 1, (Step("a"),), compensations=(tell,), closing="tell")
    with pytest.raises(DefinitionError, match="closing step 'missing'"):
        SagaDefinition("bad", 1, (Step("a"),), closing="missing")


def test_spent_retries_fail_the_step_for_good() -> None:
    max_attempts = ORDER_SAGA.step("pay").retry.max_attempts
    commands = decide(ORDER_SAGA, state(pay=(S.RUNNING, max_attempts)), StepFailed("pay", "503"))
    assert isinstance(commands[0], BeginCompensation)
    assert commands[-1] == RunStep("notify_outcome")


def test_a_failed_shipment_refunds_the_payment() -> None:
    current = state(pay=(S.SUCCEEDED, 1), confirm=(S.SUCCEEDED, 1), ship=(S.RUNNING, 1))
    commands = decide(ORDER_SAGA, current, StepFailed("ship", "undeliverable", permanent=True))
    assert commands == [BeginCompensation("ship failed: undeliverable"), RunStep("cancel_payment")]


def test_a_notify_failure_never_compensates() -> None:
    current = state(pay=(S.SUCCEEDED, 1), ship=(S.SUCCEEDED, 1), notify=(S.RUNNING, 8))
    assert decide(ORDER_SAGA, current, StepFailed("notify", "503")) == [FinishSaga(SagaStatus.COMPLETED)]
    assert decide(ORDER_SAGA, current, StepFailed("notify", "bad", permanent=True)) == [
        FinishSaga(SagaStatus.COMPLETED)]


def test_compensations_run_in_reverse_order_one_at_a_time() -> None:
    current = state(SagaStatus.COMPENSATING, pay=(S.SUCCEEDED, 1), ship=(S.SUCCEEDED, 1),
                    cancel_delivery=(S.RUNNING, 1))
    assert decide(ORDER_SAGA, current, StepSucceeded("cancel_delivery")) == [RunStep("cancel_payment")]
    done = state(SagaStatus.COMPENSATING, pay=(S.SUCCEEDED, 1), ship=(S.SUCCEEDED, 1),
                 cancel_delivery=(S.COMPENSATED, 1), cancel_payment=(S.RUNNING, 1))
    assert decide(ORDER_SAGA, done, StepSucceeded("cancel_payment")) == [RunStep("notify_outcome")]


def test_a_compensation_that_keeps_failing_parks_the_saga_failed() -> None:
    limit = ORDER_SAGA.step("cancel_payment").retry.max_attempts
    current = state(SagaStatus.COMPENSATING, pay=(S.SUCCEEDED, 1), cancel_payment=(S.RUNNING, limit))
    commands = decide(ORDER_SAGA, current, StepFailed("cancel_payment", "503"))
    assert commands == [FinishSaga(SagaStatus.FAILED, "cancel_payment failed: 503")]


def test_a_cancel_while_a_step_is_in_flight_waits_for_the_step_boundary() -> None:
    current = state(pay=(S.SUCCEEDED, 1), ship=(S.RUNNING, 1))
    assert decide(ORDER_SAGA, current, CancelRequested()) == []
    flagged = state(cancel=True, pay=(S.SUCCEEDED, 1), ship=(S.RUNNING, 1))
    assert decide(ORDER_SAGA, flagged, StepSucceeded("ship")) == [
        BeginCompensation(None), RunStep("cancel_delivery")]


def test_a_cancel_between_steps_compensates_at_once() -> None:
    current = state(pay=(S.SUCCEEDED, 1), confirm=(S.SUCCEEDED, 1), ship=(S.PENDING, 2))
    assert decide(ORDER_SAGA, current, CancelRequested("changed my mind")) == [
        BeginCompensation("changed my mind"), RunStep("cancel_payment")]


def test_an_ended_saga_ignores_every_event() -> None:
    for ended in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED):
        assert decide(ORDER_SAGA, state(ended), StepSucceeded("pay")) == []
        assert decide(ORDER_SAGA, state(ended), CancelRequested()) == []


def test_a_blocked_step_waits_without_failing_until_its_longest_wait() -> None:
    current = state(ship=(S.RUNNING, 1))
    assert decide(ORDER_SAGA, current, StepBlocked("ship", 5)) == [WaitStep("ship", 5)]
    tired = SagaState(SagaStatus.RUNNING, {"pay": StepState("pay", S.SUCCEEDED, 1),
                                           "ship": StepState("ship", S.RUNNING, 1, waited_s=599)})
    commands = decide(ORDER_SAGA, tired, StepBlocked("ship", 5))
    assert commands[0] == BeginCompensation("ship failed: delivery unavailable for over 600s")


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=1, cap_s=8)
    assert [policy.delay(n, 1.0) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 8]
    assert policy.delay(3, 0.0) == 2  # jitter spreads over [half, full]


def test_a_provider_step_without_compensation_must_say_it_cannot_be_undone() -> None:
    with pytest.raises(DefinitionError, match="compensation or declare can_undo=False"):
        SagaDefinition("bad", 1, (Step("pay", provider="payment"),))
    SagaDefinition("ok", 1, (Step("notify", provider="messaging", can_undo=False),))


def test_a_definition_rejects_unknown_compensations_and_repeated_names() -> None:
    with pytest.raises(DefinitionError, match="not defined"):
        SagaDefinition("bad", 1, (Step("pay", provider="payment", compensation="refund"),))
    with pytest.raises(DefinitionError, match="repeats"):
        SagaDefinition("bad", 1, (Step("a"), Step("a")))


@pytest.mark.parametrize("saga, cancel, current, expected", [
    (SagaStatus.COMPLETED, False, OrderStatus.SHIPPED, None),
    (SagaStatus.COMPENSATED, True, OrderStatus.PAID, OrderStatus.CANCELLED),
    (SagaStatus.COMPENSATED, False, OrderStatus.PENDING, OrderStatus.REJECTED),
    (SagaStatus.COMPENSATED, False, OrderStatus.PAID, OrderStatus.CANCELLED),
    (SagaStatus.COMPENSATED, True, OrderStatus.PENDING, OrderStatus.CANCELLED),
    (SagaStatus.COMPENSATED, False, OrderStatus.REJECTED, None),  # settled already, when the closing step opened
    (SagaStatus.FAILED, False, OrderStatus.PAID, None),
])
def test_the_order_status_an_ended_saga_leaves(saga: SagaStatus, cancel: bool, current: OrderStatus,
                                                expected: OrderStatus | None) -> None:
    assert order_outcome("order", saga, cancel, current) == expected
    assert order_outcome("cancel", saga, cancel, current) is None


@pytest.mark.parametrize("cancel, charged, ending", [
    (False, False, "not_paid"), (False, True, "refunded"), (True, False, "cancelled"),
    (True, True, "cancelled_refunded"),
])
def test_every_ending_of_an_undone_order_has_its_own_message(cancel: bool, charged: bool, ending: str) -> None:
    assert order_ending(cancel, charged) == ending
    assert "{order_id}" in ORDER_SAGA.messages[ending]


def test_an_answer_lost_after_the_provider_acted_is_retried_with_the_same_key_even_after_a_cancel() -> None:
    current = state(cancel=True, pay=(S.RUNNING, 1))
    commands = decide(ORDER_SAGA, current, StepFailed("pay", "ReadTimeout", jitter=0.0, uncertain=True))
    assert commands == [RunStep("pay", ORDER_SAGA.step("pay").retry.delay(1, 0.0))]


def test_a_cancel_waits_while_a_step_retries_to_learn_whether_it_took_effect() -> None:
    unresolved = SagaState(SagaStatus.RUNNING, {"pay": StepState("pay", S.PENDING, 1, uncertain=True)})
    assert decide(ORDER_SAGA, unresolved, CancelRequested()) == []


def test_a_step_whose_outcome_stays_unknown_parks_the_saga_for_a_person_instead_of_compensating() -> None:
    limit = ORDER_SAGA.step("ship").retry.max_attempts
    current = SagaState(SagaStatus.RUNNING, {"pay": StepState("pay", S.SUCCEEDED, 1),
                                             "ship": StepState("ship", S.RUNNING, limit, uncertain=True)})
    commands = decide(ORDER_SAGA, current, StepFailed("ship", "503"))
    assert commands == [FinishSaga(SagaStatus.FAILED, f"ship outcome unknown after {limit} attempts: 503")]


def test_a_definite_refusal_clears_an_earlier_doubt() -> None:
    current = SagaState(SagaStatus.RUNNING, {"pay": StepState("pay", S.RUNNING, 2, uncertain=True)})
    commands = decide(ORDER_SAGA, current, StepFailed("pay", "declined", permanent=True))
    assert commands == [BeginCompensation("pay failed: declined"), RunStep("notify_outcome")]
