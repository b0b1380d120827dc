"""The orchestrator: a pure function from a saga's recorded state and one event to the commands that follow.

No I/O here. The caller records the step's own outcome (SUCCEEDED, COMPENSATED or FAILED) and then carries out
the commands in the same transaction: RunStep re-opens a step (a retry, or the next step), WaitStep parks it until
its provider lets calls through, BeginCompensation and FinishSaga change the saga's status.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from saga.definition import SagaDefinition


class SagaStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED)


class StepStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    SUCCEEDED = "SUCCEEDED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"

    @property
    def is_open(self) -> bool:
        return self in (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING)


class AttemptOutcome(enum.StrEnum):
    """How one attempt of a step ended, as the saga's timeline shows it."""

    SUCCEEDED = "SUCCEEDED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"
    BLOCKED = "BLOCKED"  # its provider's breaker was open or its bulkhead full: no call, the number given back
    LOST = "LOST"  # its lease expired and the sweeper took the step back


@dataclass(frozen=True)
class StepState:
    name: str
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    waited_s: float = 0.0
    uncertain: bool = False  # an earlier attempt may have taken effect; only a definite answer clears it


@dataclass(frozen=True)
class SagaState:
    status: SagaStatus
    steps: Mapping[str, StepState]
    cancel_requested: bool = False

    def step(self, name: str) -> StepState:
        return self.steps.get(name) or StepState(name)

    def with_step(self, name: str, status: StepStatus) -> SagaState:
        steps = dict(self.steps)
        steps[name] = replace(self.step(name), status=status)
        return replace(self, steps=steps)

    @property
    def running_step(self) -> str | None:
        return next((s.name for s in self.steps.values() if s.status is StepStatus.RUNNING), None)


# Events: what happened.
@dataclass(frozen=True)
class Started:
    pass


@dataclass(frozen=True)
class StepSucceeded:
    step: str


@dataclass(frozen=True)
class StepFailed:
    step: str
    error: str
    permanent: bool = False
    jitter: float = 0.5
    uncertain: bool = False  # the provider may have carried it out (timeout, lost answer, worker lost mid-call)


@dataclass(frozen=True)
class StepBlocked:
    """The step's provider refuses calls for now (circuit breaker open)."""

    step: str
    retry_after_s: float


@dataclass(frozen=True)
class CancelRequested:
    reason: str = "cancelled by customer"


Event = Started | StepSucceeded | StepFailed | StepBlocked | CancelRequested


# Commands: what to do next.
@dataclass(frozen=True)
class RunStep:
    step: str
    delay_s: float = 0.0


@dataclass(frozen=True)
class WaitStep:
    step: str
    delay_s: float


@dataclass(frozen=True)
class BeginCompensation:
    reason: str | None  # None: keep the reason already recorded (the customer's cancel reason)


@dataclass(frozen=True)
class FinishSaga:
    status: SagaStatus
    reason: str | None = None


Command = RunStep | WaitStep | BeginCompensation | FinishSaga


def decide(definition: SagaDefinition, state: SagaState, event: Event) -> list[Command]:
    """The commands that follow `event` for a saga in `state` (state as it was before the event's outcome)."""
    if state.status.is_terminal:
        return []
    if isinstance(event, Started):
        return [RunStep(definition.steps[0].name)]
    if _stale(definition, state, event):
        return []
    if isinstance(event, StepSucceeded):
        return _on_success(definition, state, event.step)
    if isinstance(event, StepFailed):
        return _on_failure(definition, state, event)
    if isinstance(event, StepBlocked):
        return _on_blocked(definition, state, event)
    return _on_cancel(definition, state, event.reason)


def _stale(definition: SagaDefinition, state: SagaState, event: Event) -> bool:
    """A forward step's outcome that arrives after compensation began changes nothing."""
    step = getattr(event, "step", None)
    return (step is not None and state.status is SagaStatus.COMPENSATING
            and not definition.is_compensation(step))


def _on_success(definition: SagaDefinition, state: SagaState, name: str) -> list[Command]:
    if definition.is_compensation(name):
        return _next_compensation(definition, state.with_step(name, StepStatus.COMPENSATED), reason=None)
    return _forward(definition, state.with_step(name, StepStatus.SUCCEEDED), name)


def _forward(definition: SagaDefinition, state: SagaState, done: str) -> list[Command]:
    """After forward step `done` ended well (or best-effort failed): the next step, the end, or a cancel.

    A cancel waits while a later step may have taken effect in an earlier life of the saga (its outcome unknown,
    then the saga resumed by support from before it): the saga goes forward to it and runs it again with the same
    key, which tells what it did and gives the reference to undo it; skipped, it would be left in place."""
    following = definition.after(done)
    if state.cancel_requested and not _uncertain_ahead(definition, state, done):
        return _compensate(definition, state, None)
    return [RunStep(following.name)] if following else [FinishSaga(SagaStatus.COMPLETED)]


def _uncertain_ahead(definition: SagaDefinition, state: SagaState, done: str) -> bool:
    """Whether a forward step after `done` is still to run and may have taken effect before."""
    after = definition.step_names[definition.step_names.index(done) + 1:]
    return any(state.step(name).uncertain and state.step(name).status.is_open for name in after)


def _on_failure(definition: SagaDefinition, state: SagaState, event: StepFailed) -> list[Command]:
    step = definition.step(event.step)
    attempts = state.step(event.step).attempts
    uncertain = event.uncertain or (state.step(event.step).uncertain and not event.permanent)
    if state.cancel_requested and not uncertain and not definition.is_compensation(step.name):
        return _compensate(definition, state.with_step(step.name, StepStatus.FAILED), None)
    if not event.permanent and attempts < step.retry.max_attempts:
        return [RunStep(step.name, step.retry.delay(attempts, event.jitter))]  # same key: also learns the truth
    failed = state.with_step(step.name, StepStatus.FAILED)
    reason = f"{step.name} failed: {event.error}"
    if step.best_effort:
        return _after_best_effort(definition, failed, step.name)
    if definition.is_compensation(step.name):
        return [FinishSaga(SagaStatus.FAILED, reason)]
    if uncertain:  # it may have happened and we hold no reference to undo it: a person decides
        return [FinishSaga(SagaStatus.FAILED, f"{step.name} outcome unknown after {attempts} attempts: "
                                              f"{event.error}")]
    if not definition.compensate_on_failure:
        return [FinishSaga(SagaStatus.FAILED, reason)]
    return _compensate(definition, failed, reason)


def _after_best_effort(definition: SagaDefinition, state: SagaState, name: str) -> list[Command]:
    """A best-effort step that failed for good changes nothing: the saga goes on as if it had succeeded."""
    if definition.is_compensation(name):
        return _next_compensation(definition, state, reason=None)
    return _forward(definition, state, name)


def _on_blocked(definition: SagaDefinition, state: SagaState, event: StepBlocked) -> list[Command]:
    """Wait for the provider while the step's longest wait allows; a cancelled saga does not wait to undo."""
    step = definition.step(event.step)
    row = state.step(step.name)
    if state.cancel_requested and not row.uncertain and not definition.is_compensation(step.name):
        return _compensate(definition, state.with_step(step.name, StepStatus.FAILED), None)
    if row.waited_s + event.retry_after_s <= step.max_wait_s:
        return [WaitStep(step.name, event.retry_after_s)]
    failure = StepFailed(step.name, f"{step.provider} unavailable for over {step.max_wait_s:g}s", permanent=True)
    return _on_failure(definition, state, failure)


def _on_cancel(definition: SagaDefinition, state: SagaState, reason: str) -> list[Command]:
    """A cancel acts now unless a step is in flight, or waits to retry after an answer that may have been lost;
    then the flag set by the caller acts when that step ends."""
    unresolved = any(s.uncertain and s.status.is_open for s in state.steps.values())
    if state.status is SagaStatus.COMPENSATING or state.running_step is not None or unresolved:
        return []
    return _compensate(definition, replace(state, cancel_requested=True), reason)


def _compensate(definition: SagaDefinition, state: SagaState, reason: str | None) -> list[Command]:
    return [BeginCompensation(reason), *_next_compensation(definition, state, reason)]


def _next_compensation(definition: SagaDefinition, state: SagaState, reason: str | None) -> list[Command]:
    """Undo the latest completed step not yet undone; when none is left, run the closing step (once), then the
    saga is COMPENSATED."""
    for step in reversed(definition.steps):
        comp = step.compensation
        if comp and state.step(step.name).status is StepStatus.SUCCEEDED and state.step(comp).status not in (
            StepStatus.COMPENSATED,
        ):
            return [RunStep(comp)]
    closing = definition.closing
    if closing is not None and state.step(closing).status not in (StepStatus.COMPENSATED, StepStatus.FAILED):
        return [RunStep(closing)]
    return [FinishSaga(SagaStatus.COMPENSATED, reason)]


def compensate_now(definition: SagaDefinition, state: SagaState, reason: str | None) -> list[Command]:
    """Undo what the saga did, latest first, whatever its steps say now (support's "compensate" on a parked
    saga): the commands that begin it."""
    return _compensate(definition, state, reason)
