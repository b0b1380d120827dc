"""A saga's timeline for support: the saga, its steps in order and every attempt of each.

Provider steps keep a row per attempt (step_attempts, written by the statement that closes the attempt); a local
step starts and ends inside one transaction, so its step row is its one attempt. The result is plain dataclasses
(dataclasses.asdict gives nested dicts; datetimes stay datetime objects, aware UTC).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from infra import repository as repo
from saga.definition import SagaDefinition
from saga.orchestrator import StepStatus
from services.orders import saga_view
from services.runtime import Runtime

# The statuses finish_local_step writes: a local step that has them has run.
LOCAL_STEP_RAN = (StepStatus.SUCCEEDED.value, StepStatus.FAILED.value)


@dataclass(frozen=True)
class AttemptEntry:
    """One attempt of a step: SUCCEEDED, COMPENSATED, FAILED, BLOCKED (no call, its number given back) or LOST
    (its lease expired and the sweeper took the step back)."""

    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str
    error: str | None
    task_id: str | None
    provider_ref: str | None
    outcome_unknown: bool


@dataclass(frozen=True)
class StepEntry:
    """A step as its row says now (`attempts` counts the attempts spent), with every attempt it made."""

    name: str
    position: int
    local: bool
    status: str
    attempts: int
    max_attempts: int
    error: str | None
    provider_ref: str | None
    outcome_unknown: bool
    started_at: datetime | None
    finished_at: datetime | None
    waited_s: float
    history: list[AttemptEntry] = field(default_factory=list)


@dataclass(frozen=True)
class SagaTimeline:
    id: int
    kind: str
    order_id: int
    status: str
    reason: str | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps: list[StepEntry]


def saga_timeline(rt: Runtime, saga_id: int) -> SagaTimeline:
    """The saga, its steps in position order and each step's attempts in the order they started."""
    with rt.db.reading() as conn:
        view = saga_view(conn, saga_id)
        attempts = repo.saga_attempts(conn, saga_id)
    saga = view.saga
    return SagaTimeline(
        id=saga.id, kind=saga.kind, order_id=saga.order_id, status=saga.status, reason=saga.reason,
        cancel_requested=bool(saga.cancel_requested), created_at=saga.created_at, updated_at=saga.updated_at,
        finished_at=saga.finished_at, steps=_steps(rt.definitions.get(saga.kind), view.steps, attempts),
    )


def _steps(definition: SagaDefinition | None, rows: Sequence[Any], attempts: Sequence[Any]) -> list[StepEntry]:
    """Each step row with its attempts; local steps are those the saga's definition says call no provider."""
    local = {s.name for s in definition.all_steps if s.is_local} if definition else set()
    by_step: dict[str, list[AttemptEntry]] = {}
    for row in attempts:
        by_step.setdefault(row.step, []).append(_attempt(row, row.attempt, row.outcome))
    return [_step(row, row.name in local, by_step.get(row.name, [])) for row in rows]


def _step(row: Any, local: bool, history: list[AttemptEntry]) -> StepEntry:
    if local and row.status in LOCAL_STEP_RAN:
        history = [_attempt(row, row.attempts, row.status)]
    return StepEntry(
        name=row.name, position=row.position, local=local, status=row.status, attempts=row.attempts,
        max_attempts=row.max_attempts, error=row.error, provider_ref=row.provider_ref,
        outcome_unknown=bool(row.outcome_unknown), started_at=row.started_at, finished_at=row.finished_at,
        waited_s=row.waited_s, history=history,
    )


def _attempt(row: Any, number: int, outcome: str) -> AttemptEntry:
    """An attempt from a step_attempts row, or (local steps) from the step row itself."""
    return AttemptEntry(
        attempt=number, started_at=row.started_at, finished_at=row.finished_at, outcome=outcome,
        error=row.error, task_id=row.task_id, provider_ref=row.provider_ref,
        outcome_unknown=bool(row.outcome_unknown),
    )
