"""Carries out the orchestrator's commands inside the caller's transaction.

Local steps (no provider) run right here, in the same transaction that recorded the step before them, each with
its own step row; provider steps are opened in the step table (the outbox) and returned for publishing after
the commit.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from domain.errors import DomainError
from domain.model import Order, OrderStatus
from infra import metrics
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
from saga.order_saga import order_outcome
from services.runtime import Runtime

Dispatch = tuple[int, str]


@dataclass(frozen=True)
class InlineClaim:
    """Claim the first step the executor opens for immediate running (for the caller to run it in this task)
    instead of returning it as a dispatch."""

    task_id: str | None
    lease_s: float
    queue: str | None = None  # the caller's queue (STEP_QUEUES): a next step routed to another queue is sent there


class Executor:
    """Applies commands for one saga within one transaction; collects the dispatches to publish after commit."""

    def __init__(self, conn: Connection, saga: SagaRecord, now: datetime, rt: Runtime, order: Order | None = None,
                 inline: InlineClaim | None = None) -> None:
        self.conn = conn
        self.saga = saga
        self.order = order  # the saga's order as read under the saga lock, when the caller has it
        self.definition: SagaDefinition = rt.definitions[saga.kind]
        self.table = rt.steps
        self.state: SagaState = saga.state()
        self.now = now
        self.dispatches: list[Dispatch] = []
        self.inline = inline
        self.queue_for = rt.publisher.queue_for
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
        if step.is_local:
            return self._run_local(step.name)
        if step.name == self.definition.closing:  # everything is undone: the order takes its final status now
            self._settle_order(SagaStatus.COMPENSATED, self.saga.reason)
        position = self._position(step.name)
        due = self.now + timedelta(seconds=command.delay_s)
        immediate = command.delay_s <= 0
        if immediate and self.inline is not None and self.claimed is None and self._same_queue(step.name):
            number = repo.open_claimed_step(self.conn, self.saga.id, step.name, position, step.retry.max_attempts,
                                            self.now, self.inline.lease_s, self.inline.task_id)
            self.claimed = (step.name, number)
            self.state = self.state.with_step(step.name, StepStatus.RUNNING)
            return []
        repo.open_step(self.conn, self.saga.id, step.name, position, step.retry.max_attempts, due,
                       self.now if immediate else None)
        self.state = self.state.with_step(step.name, StepStatus.PENDING)
        if immediate:
            self.dispatches.append((self.saga.id, step.name))
        return []

    def _same_queue(self, step: str) -> bool:
        """Whether the caller may run `step` itself: it travels on the caller's queue (always, without STEP_QUEUES),
        so a worker group dedicated to payments does not run shipping inline."""
        return self.inline is None or self.inline.queue is None or self.queue_for(step) == self.inline.queue

    def _run_local(self, name: str) -> list[Command]:
        """Change the order as the local step says, record the step, and decide what follows it."""
        attempts = self.state.step(name).attempts + 1
        try:
            status = self.table[name].sets_order
            assert status is not None, f"local step {name} sets no order status"
            self._set_order_status(status, self.saga.reason)
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
        reason = command.reason or self.saga.reason
        if command.status is SagaStatus.FAILED:
            self._order().flag(f"{self.definition.kind} saga {self.saga.id} is parked for support: {reason}")
            repo.save_order_status(self.conn, self._order())
        self._settle_order(command.status, reason)
        self.state = replace(self.state, status=command.status)
        took = (self.now - self.saga.created_at).total_seconds() if self.saga.created_at else None
        metrics.saga_finished(self.saga.kind, command.status.value, took)

    def _settle_order(self, saga_status: SagaStatus, reason: str | None) -> None:
        """Give the order the status the saga's ending leaves it in, if any."""
        outcome = order_outcome(self.definition.kind, saga_status, self.state.cancel_requested,
                                self._order().status)
        if outcome is not None:
            self._set_order_status(outcome, reason)

    def _order(self) -> Order:
        if self.order is None:
            self.order = repo.get_order(self.conn, self.saga.order_id)
        assert self.order is not None
        return self.order

    def _set_order_status(self, status: OrderStatus, reason: str | None = None) -> None:
        order = self._order()
        if order.status is status:
            return
        order.move_to(status, reason)
        repo.save_order_status(self.conn, order)

    def _position(self, name: str) -> int:
        row = self.saga.steps.get(name)
        if row is not None:
            return int(row.position)
        return [s.name for s in self.definition.all_steps].index(name)


def start_saga(conn: Connection, rt: Runtime, definition: SagaDefinition, order_id: int, now: datetime,
               reason: str | None = None) -> tuple[SagaRecord, list[Dispatch]]:
    """Create a saga and carry out the orchestrator's first decision; returns it and the dispatches to publish.

    The usual first decision, "run provider step X now", is written with the rows themselves (one statement
    fewer per order); any other goes through the executor."""
    metrics.saga_started(definition.kind)
    first = first_dispatch(definition)
    if first is not None:
        saga = repo.create_saga(conn, definition, order_id, now, reason, dispatched=first)
        return saga, [(saga.id, first)]
    saga = repo.create_saga(conn, definition, order_id, now, reason)
    return saga, Executor(conn, saga, now, rt).handle(Started())


def first_dispatch(definition: SagaDefinition) -> str | None:
    """The provider step a new saga of `definition` runs at once, when its first decision is just that."""
    known = _FIRST_DISPATCH.get(id(definition))
    if known is None or known[0] is not definition:
        known = _FIRST_DISPATCH[id(definition)] = (definition, _first_dispatch(definition))
    return known[1]


# by definition (its id, with the definition kept so the id is not reused): decide() once per definition
_FIRST_DISPATCH: dict[int, tuple[SagaDefinition, str | None]] = {}


def _first_dispatch(definition: SagaDefinition) -> str | None:
    commands = decide(definition, SagaState(SagaStatus.RUNNING, {}), Started())
    first = commands[0] if len(commands) == 1 and isinstance(commands[0], RunStep) else None
    if first is not None and first.delay_s <= 0 and not definition.step(first.step).is_local:
        return first.step
    return None


def jitter() -> float:
    """A random fraction in [0, 1) for retry backoff."""
    return random.random()
