"""The step table is held against every saga definition when a process starts: a step it lacks, or knows only in
part, stops the runtime and the worker there, naming the step, instead of being sent as a task nobody runs."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import saga.order_saga
from infra.config import Settings
from saga.definition import SagaDefinition, Step
from saga.order_saga import DEFINITIONS, ORDER_SAGA
from services.effects import STEP_EFFECTS, StepEffects, StepTableError, check_step_table
from services.runtime import configured_definitions
from tests.unit.fakes import settings_for
from workers.app import create_celery, provider_steps


def saga_of(*steps: Step, messages: dict[str, str] | None = None) -> SagaDefinition:
    return SagaDefinition(kind="gift", version=1, steps=steps, messages=messages or {})


def table_with(**entries: StepEffects) -> dict[str, StepEffects]:
    return {**STEP_EFFECTS, **entries}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return replace(settings_for(f"sqlite:///{tmp_path / 'unused.db'}"), sweep_in_worker=False)


def test_the_shipped_definitions_match_the_step_table() -> None:
    check_step_table(DEFINITIONS.values(), STEP_EFFECTS)


def test_a_step_missing_from_the_table_is_named() -> None:
    with pytest.raises(StepTableError, match="step 'wrap' of saga 'gift' has no entry"):
        check_step_table([saga_of(Step("wrap"))], STEP_EFFECTS)


def test_a_local_step_whose_entry_sets_no_order_status_is_named() -> None:
    with pytest.raises(StepTableError, match="step 'wrap' of saga 'gift' is local but .* sets no order status"):
        check_step_table([saga_of(Step("wrap"))], table_with(wrap=StepEffects()))


def test_a_provider_step_whose_entry_makes_no_call_is_named() -> None:
    with pytest.raises(StepTableError, match="step 'notify' of saga 'gift' calls messaging, but its step table"):
        check_step_table([saga_of(Step("notify", provider="messaging", can_undo=False))],
                         table_with(notify=StepEffects()))


def test_a_local_step_whose_entry_calls_a_provider_is_named() -> None:
    with pytest.raises(StepTableError, match="step 'pay' of saga 'gift' calls no provider"):
        check_step_table([saga_of(Step("pay"))], STEP_EFFECTS)


def test_a_message_step_in_a_saga_without_messages_is_named() -> None:
    with pytest.raises(StepTableError, match="step 'notify' of saga 'gift' sends a message but saga 'gift'"):
        check_step_table([saga_of(Step("notify", provider="messaging", can_undo=False))], STEP_EFFECTS)


def test_the_runtime_refuses_to_start_with_a_definition_the_table_does_not_cover(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(saga.order_saga.DEFINITIONS, "gift", saga_of(Step("wrap")))

    with pytest.raises(StepTableError, match="'wrap'"):
        configured_definitions({})


def test_the_worker_refuses_to_start_when_the_table_lacks_a_step(monkeypatch: pytest.MonkeyPatch,
                                                                 settings: Settings) -> None:
    monkeypatch.delitem(STEP_EFFECTS, "ship")

    with pytest.raises(StepTableError, match="step 'ship' of saga 'order' has no entry"):
        create_celery(settings)


def test_the_worker_registers_one_task_per_provider_step_and_the_sweeper(settings: Settings) -> None:
    app = create_celery(settings)

    steps = provider_steps(DEFINITIONS.values())
    assert {f"saga.{step}" for step in steps} | {"saga.sweep"} <= set(app.tasks)
    assert "saga.confirm" not in app.tasks and "saga.mark_shipped" not in app.tasks
    assert set(steps) == {"pay", "ship", "notify", "cancel_payment", "cancel_delivery", "notify_outcome",
                          "notify_cancelled"}


# --- step policies from configuration --------------------------------------------------------------------------------
def test_step_policies_apply_the_star_to_every_step_and_a_name_over_it() -> None:
    definitions = configured_definitions({"*": {"max_attempts": 3}, "ship": {"max_attempts": 9, "max_wait_s": 5}})

    order = definitions[ORDER_SAGA.kind]
    assert order.step("pay").retry.max_attempts == 3
    assert (order.step("ship").retry.max_attempts, order.step("ship").max_wait_s) == (9, 5)
    assert definitions["cancel"].step("cancel_payment").retry.max_attempts == 3


def test_an_unknown_step_policy_setting_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown setting.*'retries'"):
        configured_definitions({"pay": {"retries": 3}})


def test_without_step_policies_the_definitions_are_the_shipped_ones() -> None:
    assert configured_definitions({}) == DEFINITIONS
