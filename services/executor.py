"""Carries out the orchestrator's commands inside the caller's transaction.

Local steps (no provider) run right here, in the same transaction that recorded the step before them, each with
its own step row; provider steps are opened in the step table (the outbox) and returned for publishing after
the commit.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from domain.errors import DomainError
from domain.model import Order, OrderStatus
from infra import repository as repo
from infra.repository import SagaRecord
from saga.definition import SagaDefinition
from saga.orchestrator import (
    BeginCompensation,
    Command,
    Event,
    FinishSaga,
    RunStep,
    SagaState,
    SagaStatus,
    Started,
    StepFailed,
    StepStatus,
    StepSucceeded,
    WaitStep,
    decide,
)
from saga.order_saga import DEFINITIONS, order_outcome
from services.effects import LOCAL_STEPS

Dispatch = tuple[int, str]


@dataclass(frozen=True)
class InlineClaim:
    """Claim the first step the executor opens for immediate running (for the caller to run it in this task)
    instead of returning it as a dispatch."""

    task_id: str | None
    lease_s: float


class Executor:
    """Applies commands for one saga within one transaction; collects the dispatches to publish after commit."""

    def __init__(self, conn: Connection, saga: SagaRecord, now: datetime,
                 definitions: Mapping[str, SagaDefinition] = DEFINITIONS, order: Order | None = None,
                 inline: InlineClaim | None = None) -> None:
        self.conn = conn
        self.saga = saga
        self.order = order  # the saga's order as read under the saga lock, when the caller has it
        self.definition: SagaDefinition = definitions[saga.kind]
        self.state: SagaState = saga.state()
        self.now = now
        self.dispatches: list[Dispatch] = []
        self.inline = inline
        self.claimed: tuple[str, int] | None = None  # (step, attempt) claimed for the caller, when inline

    def handle(self, event: Event, outcome: StepStatus | None = None) -> list[Dispatch]:
        """Decide on `event` (after noting the event's step as `outcome`) and apply every resulting command."""
        commands = decide(self.definition, self.state, event)
        if outcome is not None and hasattr(event, "step"):
            self.state = self.state.with_step(event.step, outcome)
        return self.run(commands)

    def run(self, commands: list[Command]) -> list[Dispatch]:
        """Apply `commands` and those that local steps lead to; returns the dispatches to publish."""
        pending = list(commands)
        while pending:
            pending.extend(self._apply(pending.pop(0)))
        return self.dispatches

    def _apply(self, command: Command) -> list[Command]:
        if isinstance(command, RunStep):
            return self._run(command)
        if isinstance(command, WaitStep):
            self._wait(command)
        elif isinstance(command, BeginCompensation):
            self._begin_compensation(command.reason)
        elif isinstance(command, FinishSaga):
            self._finish(command)
        return []

    def _run(self, command: RunStep) -> list[Command]:
        step = self.definition.step(command.step)
        if step.name in LOCAL_STEPS:
            return self._run_local(step.name)
        position = self._position(step.name)
        due = self.now + timedelta(seconds=command.delay_s)
        immediate = command.delay_s <= 0
        if immediate and self.inline is not None and self.claimed is None:
            number = repo.open_claimed_step(self.conn, self.saga.id, step.name, position, step.retry.max_attempts,
                                            self.now, self.inline.lease_s, self.inline.task_id)
            self.claimed = (step.name, number)
            self.state = self.state.with_step(step.name, StepStatus.RUNNING)
            return []
        repo.open_step(self.conn, self.saga.id, step.name, position, step.retry.max_attempts, due, immediate)
        self.state = self.state.with_step(step.name, StepStatus.PENDING)
        if immediate:
            self.dispatches.append((self.saga.id, step.name))
        return []

    def _run_local(self, name: str) -> list[Command]:
        """Change the order as the local step says, record the step, and decide what follows it."""
        attempts = self.state.step(name).attempts + 1
        try:
            self._set_order_status(LOCAL_STEPS[name], self.saga.reason)
        except DomainError as exc:
            repo.finish_local_step(self.conn, self.saga.id, name, StepStatus.FAILED.value, attempts, self.now,
                                   str(exc))
            failed = decide(self.definition, self.state, StepFailed(name, str(exc), permanent=True))
            self.state = self.state.with_step(name, StepStatus.FAILED)
            return failed
        repo.finish_local_step(self.conn, self.saga.id, name, StepStatus.SUCCEEDED.value, attempts, self.now, None)
        following = decide(self.definition, self.state, StepSucceeded(name))
        self.state = self.state.with_step(name, StepStatus.SUCCEEDED)
        return following

    def _wait(self, command: WaitStep) -> None:
        """The provider refuses calls for now: park the step, giving back the attempt it did not really make."""
        row = self.saga.steps[command.step]
        repo.update_step(
            self.conn, self.saga.id, command.step, status=StepStatus.WAITING.value,
            attempts=max(row.attempts - 1, 0), waited_s=row.waited_s + command.delay_s, lease_until=None,
            available_at=self.now + timedelta(seconds=command.delay_s), dispatched_at=None, finished_at=None,
        )
        self.state = self.state.with_step(command.step, StepStatus.WAITING)

    def _skip_open_steps(self) -> None:
        """Steps that will never run now are SKIPPED (the state, read under the saga lock, says if any is open)."""
        if any(s.status in (StepStatus.PENDING, StepStatus.WAITING) for s in self.state.steps.values()):
            repo.skip_open_steps(self.conn, self.saga.id, self.now)

    def _begin_compensation(self, reason: str | None) -> None:
        self._skip_open_steps()
        values = {"status": SagaStatus.COMPENSATING.value}
        if reason is not None:
            values["reason"] = reason
            self.saga.reason = reason
        repo.update_saga(self.conn, self.saga.id, **values)
        self.state = replace(self.state, status=SagaStatus.COMPENSATING)

    def _finish(self, command: FinishSaga) -> None:
        self._skip_open_steps()
        values: dict[str, object] = {"status": command.status.value, "finished_at": self.now}
        if command.reason is not None:
            values["reason"] = command.reason
        repo.update_saga(self.conn, self.saga.id, **values)
        confirmed = self.state.step("confirm").status is StepStatus.SUCCEEDED
        outcome = order_outcome(self.definition.kind, command.status, self.state.cancel_requested, confirmed)
        if outcome is not None:
            self._set_order_status(outcome, command.reason or self.saga.reason)
        self.state = replace(self.state, status=command.status)

    def _set_order_status(self, status: OrderStatus, reason: str | None = None) -> None:
        order = self.order or repo.get_order(self.conn, self.saga.order_id)
        assert order is not None
        order.move_to(status, reason)
        self.order = order
        repo.save_order_status(self.conn, order)

    def _position(self, name: str) -> int:
        row = self.saga.steps.get(name)
        if row is not None:
            return int(row.position)
        names = self.definition.step_names + tuple(c.name for c in self.definition.compensations)
        return names.index(name)


def start_saga(conn: Connection, definition: SagaDefinition, order_id: int, now: datetime,
               definitions: Mapping[str, SagaDefinition] = DEFINITIONS,
               reason: str | None = None) -> tuple[SagaRecord, list[Dispatch]]:
    """Create a saga and carry out the orchestrator's first decision; returns it and the dispatches to publish.

    The usual first decision, "run provider step X now", is written with the rows themselves (one statement
    fewer per order); any other goes through the executor."""
    commands = decide(definition, SagaState(SagaStatus.RUNNING, {}), Started())
    first = commands[0] if len(commands) == 1 and isinstance(commands[0], RunStep) else None
    if first is not None and first.delay_s <= 0 and first.step not in LOCAL_STEPS:
        saga = repo.create_saga(conn, definition, order_id, now, reason, dispatched=first.step)
        return saga, [(saga.id, first.step)]
    saga = repo.create_saga(conn, definition, order_id, now, reason)
    return saga, Executor(conn, saga, now, definitions).handle(Started())


def jitter() -> float:
    """A random fraction in [0, 1) for retry backoff."""
    return random.random()
