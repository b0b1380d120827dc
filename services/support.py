"""Support: find a saga that needs a person, see why, act on it, and leave a trail.

Each action runs in one transaction that holds the saga row (as the workers and the sweeper do while they change
it) and writes its audit entry; on PostgreSQL a second action on the same saga while one runs is refused at once
(a transaction-scoped advisory lock), elsewhere it waits and then finds the saga's state changed. What an action
starts is published after the commit, like every other step.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.errors import DomainError
from infra import repository as repo
from infra.repository import SagaRecord
from infra.tables import audit_log
from saga.definition import SagaDefinition
from saga.orchestrator import (
    CancelRequested,
    RunStep,
    SagaStatus,
    StepStatus,
    StepSucceeded,
    compensate_now,
)
from saga.order_saga import CANCEL_SAGA, ORDER_SAGA
from services import retention
from services.executor import Dispatch, Executor, start_saga
from services.runtime import Runtime
from services.steps import publish

# pg_try_advisory_xact_lock(ACTION_LOCK_SPACE, saga_id): one support action per saga at a time
ACTION_LOCK_SPACE = 0x5A6A


class Action(enum.StrEnum):
    RETRY = "retry"
    RESUME = "resume"
    SKIP = "skip"
    COMPENSATE = "compensate"
    CANCEL = "cancel"


class ActionRefused(DomainError):
    """The saga's state does not allow the action (HTTP 409)."""

    def __init__(self, saga_id: int, action: str, why: str, state: str | None = None) -> None:
        super().__init__(f"cannot {action} saga {saga_id}: {why}")
        self.saga_id = saga_id
        self.action = action
        self.state = state


class ActionInProgress(ActionRefused):
    """Another support action holds the saga right now (HTTP 409)."""

    def __init__(self, saga_id: int, action: str) -> None:
        super().__init__(saga_id, action, "another support action on it is running; try again when it is done")


@dataclass(frozen=True)
class Actor:
    name: str
    role: str


@dataclass(frozen=True)
class SupportAction:
    saga_id: int
    action: Action
    reason: str
    actor: Actor
    step: str | None = None  # resume: the step to run again
    expect: str | None = None  # bulk: act only while the saga is still in this state (its dry run's)
    bulk_token: str | None = None


@dataclass(frozen=True)
class ActionResult:
    saga_id: int
    action: str
    state_before: str
    state_after: str
    audit_id: int
    started_saga_id: int | None = None  # cancel of a completed order: the cancel saga it started


@dataclass
class _Outcome:
    dispatches: list[Dispatch] = field(default_factory=list)
    started_saga_id: int | None = None
    detail: str | None = None


def failing_step(saga: SagaRecord) -> str | None:
    """The step a person should look at: the latest (by position) that failed for good."""
    failed = [row for row in saga.steps.values() if row.status == StepStatus.FAILED.value]
    return max(failed, key=lambda row: row.position).name if failed else None


def state_label(saga: SagaRecord) -> str:
    """The saga's status, with its failing step when it has one: "FAILED:pay", "COMPLETED:notify", "RUNNING"."""
    step = failing_step(saga)
    return f"{saga.status.value}:{step}" if step else saga.status.value


def perform(rt: Runtime, cmd: SupportAction) -> ActionResult:
    """Carry out one support action and record it in the audit log, refused or done; publish what it starts."""
    try:
        return _perform(rt, cmd)
    except ActionRefused as exc:
        record_refusal(rt, cmd, str(exc), exc.state)
        raise


def _perform(rt: Runtime, cmd: SupportAction) -> ActionResult:
    now = rt.clock()
    with rt.db.transaction() as conn:
        _hold(conn, cmd)
        saga = repo.load_saga(conn, cmd.saga_id, lock=True)
        if saga is None:
            raise retention.missing(conn, cmd.saga_id)
        before = state_label(saga)
        if cmd.expect is not None and before != cmd.expect:
            raise ActionRefused(cmd.saga_id, cmd.action.value, f"it is {before} now, not {cmd.expect} as planned",
                                before)
        outcome = _ACTIONS[cmd.action](rt, conn, saga, cmd, now)
        after_saga = repo.load_saga(conn, cmd.saga_id)
        assert after_saga is not None
        after = state_label(after_saga)
        audit_id = write_audit(conn, now, cmd.actor, cmd.action.value, cmd.reason, saga_id=cmd.saga_id,
                               step=cmd.step or failing_step(saga), bulk_token=cmd.bulk_token,
                               state_before=before, state_after=after, outcome="done", detail=outcome.detail)
    publish(rt, outcome.dispatches, saga.order_id)
    return ActionResult(cmd.saga_id, cmd.action.value, before, after, audit_id, outcome.started_saga_id)


def _hold(conn: Connection, cmd: SupportAction) -> None:
    if conn.dialect.name != "postgresql":
        return  # SQLite runs one writing transaction at a time
    held = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(ACTION_LOCK_SPACE, cmd.saga_id))).scalar_one()
    if not held:
        raise ActionInProgress(cmd.saga_id, cmd.action.value)


def write_audit(conn: Connection, now: datetime, actor: Actor, action: str, reason: str, *, outcome: str,
                saga_id: int | None = None, step: str | None = None, bulk_token: str | None = None,
                state_before: str | None = None, state_after: str | None = None,
                detail: str | None = None) -> int:
    return int(conn.execute(audit_log.insert().returning(audit_log.c.id), {
        "at": now, "actor": actor.name, "role": actor.role, "action": action, "saga_id": saga_id, "step": step,
        "bulk_token": bulk_token, "reason": reason, "state_before": state_before, "state_after": state_after,
        "outcome": outcome, "detail": detail,
    }).scalar_one())


def _refuse(saga: SagaRecord, cmd: SupportAction, why: str) -> ActionRefused:
    return ActionRefused(saga.id, cmd.action.value, why, state_label(saga))


def _definition(rt: Runtime, saga: SagaRecord) -> SagaDefinition:
    return rt.definitions[saga.kind]


def _retry(rt: Runtime, conn: Connection, saga: SagaRecord, cmd: SupportAction, now: datetime) -> _Outcome:
    """Run the failed step again from its first attempt, with the same idempotency key."""
    definition, step = _settled_failure(rt, saga, cmd)
    return _Outcome(_reopen(rt, conn, saga, definition, step, now))


def _settled_failure(rt: Runtime, saga: SagaRecord, cmd: SupportAction) -> tuple[SagaDefinition, str]:
    """The saga's definition and its failed step, which retry and skip act on; refused while the saga runs."""
    step = failing_step(saga)
    if step is None:
        raise _refuse(saga, cmd, "no step of it failed")
    if saga.status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
        raise _refuse(saga, cmd, "it is still running; it retries its steps itself")
    definition = _definition(rt, saga)
    _check_not_superseded(definition, saga, step, cmd)
    return definition, step


def _check_not_superseded(definition: SagaDefinition, saga: SagaRecord, step: str, cmd: SupportAction) -> None:
    """A forward step of a saga that has since been undone cannot run again: its compensation already ran."""
    compensated = any(saga.steps[s.name].status == StepStatus.COMPENSATED.value
                      for s in definition.compensations if s.name in saga.steps)
    if not definition.is_compensation(step) and (saga.status is SagaStatus.COMPENSATED or compensated):
        raise _refuse(saga, cmd, f"it was undone after {step} failed; a forward step cannot run again")


def _reopen(rt: Runtime, conn: Connection, saga: SagaRecord, definition: SagaDefinition, step: str,
            now: datetime) -> list[Dispatch]:
    """The step starts again (attempts from zero, due now); the saga runs (or compensates) again."""
    status = SagaStatus.COMPENSATING if definition.is_compensation(step) else SagaStatus.RUNNING
    _run_again(conn, saga, status)
    if definition.step(step).is_local:
        saga.status = status
        saga.steps[step] = replace(saga.steps[step], status=StepStatus.PENDING.value)
        return Executor(conn, saga, now, rt).run([RunStep(step)])
    repo.update_step(conn, saga.id, step, status=StepStatus.PENDING.value, attempts=0, waited_s=0.0,
                     lease_until=None, available_at=now, dispatched_at=now, finished_at=None)
    return [(saga.id, step)]


def _run_again(conn: Connection, saga: SagaRecord, status: SagaStatus) -> None:
    """The saga is no longer parked: it runs (or compensates) again, and neither it nor its order keeps the
    reason it was parked for (a cancel's reason stays: the order still ends cancelled)."""
    reason = saga.reason if saga.cancel_requested or status is SagaStatus.COMPENSATING else None
    repo.update_saga(conn, saga.id, status=status.value, finished_at=None, reason=reason)
    saga.status, saga.reason = status, reason
    _unpark_order(conn, saga)


def _unpark_order(conn: Connection, saga: SagaRecord) -> None:
    """The order no longer says its saga is parked."""
    order = repo.get_order(conn, saga.order_id, lock=True)
    if order is not None and order.reason and f"saga {saga.id} is parked for support" in order.reason:
        order.reason = None
        repo.save_order_status(conn, order)


def _resume(rt: Runtime, conn: Connection, saga: SagaRecord, cmd: SupportAction, now: datetime) -> _Outcome:
    """Run the saga again from the chosen forward step; the steps before it stay as they are."""
    definition = _definition(rt, saga)
    if saga.status is not SagaStatus.FAILED:
        raise _refuse(saga, cmd, f"only a parked (FAILED) saga can be resumed; it is {saga.status.value}")
    names = [s.name for s in definition.steps]
    if cmd.step not in names:
        raise _refuse(saga, cmd, f"step must be one of its forward steps: {', '.join(names)}")
    _check_not_superseded(definition, saga, cmd.step, cmd)
    if _compensation_begun(definition, saga):  # even a compensation that failed may have refunded: never go forward
        raise _refuse(saga, cmd, "its compensation has begun; retry or skip the failed compensation instead")
    chosen = names.index(cmd.step)
    unfinished = [n for n in names[:chosen] if saga.steps[n].status != StepStatus.SUCCEEDED.value]
    if unfinished:
        raise _refuse(saga, cmd, f"the steps before {cmd.step} must have succeeded: {', '.join(unfinished)} did not")
    for name in names[chosen + 1:]:  # the steps after it run as if for the first time when their turn comes
        repo.update_step(conn, saga.id, name, status=StepStatus.PENDING.value, attempts=0, waited_s=0.0,
                         lease_until=None, available_at=None, dispatched_at=None, finished_at=None)
        saga.steps[name] = replace(saga.steps[name], status=StepStatus.PENDING.value, attempts=0)
    return _Outcome(_reopen(rt, conn, saga, definition, cmd.step, now))


def _skip(rt: Runtime, conn: Connection, saga: SagaRecord, cmd: SupportAction, now: datetime) -> _Outcome:
    """The failed step was resolved by hand, outside the system: the saga goes on as if it had succeeded."""
    definition, step = _settled_failure(rt, saga, cmd)
    compensation = definition.is_compensation(step)
    resolved = StepStatus.COMPENSATED if compensation else StepStatus.SUCCEEDED
    repo.update_step(conn, saga.id, step, status=resolved.value, finished_at=now, lease_until=None,
                     outcome_unknown=False, error=f"resolved by hand by {cmd.actor.name}: {cmd.reason}")
    running = SagaStatus.COMPENSATING if compensation else SagaStatus.RUNNING
    _run_again(conn, saga, running)
    return _Outcome(Executor(conn, saga, now, rt).handle(StepSucceeded(step), resolved))


def _compensate(rt: Runtime, conn: Connection, saga: SagaRecord, cmd: SupportAction, now: datetime,
                cancel: bool = False) -> _Outcome:
    """Undo what the parked saga did, latest first."""
    definition = _definition(rt, saga)
    if saga.status is not SagaStatus.FAILED:
        raise _refuse(saga, cmd, f"only a parked (FAILED) saga can be compensated by hand; it is "
                                 f"{saga.status.value}" + ("; cancel it instead" if saga.status is SagaStatus.RUNNING
                                                           else ""))
    if not definition.compensations:
        raise _refuse(saga, cmd, f"a {saga.kind} saga has nothing to undo")
    if _compensation_begun(definition, saga):
        raise _refuse(saga, cmd, "its compensation has already begun; retry or skip the failed compensation")
    # A step whose outcome is unknown is taken as not done (the person acting has checked; the audit entry says
    # so): only what surely succeeded is undone.
    unknown = [name for name, row in saga.steps.items() if row.outcome_unknown]
    repo.update_saga(conn, saga.id, status=SagaStatus.RUNNING.value, finished_at=None,
                     cancel_requested=cancel or saga.cancel_requested)
    _unpark_order(conn, saga)
    saga.status, saga.cancel_requested = SagaStatus.RUNNING, cancel or saga.cancel_requested
    executor = Executor(conn, saga, now, rt)
    reason = f"{'cancelled' if cancel else 'compensated'} by support ({cmd.actor.name}): {cmd.reason}"
    detail = f"outcome unknown, taken as not done: {', '.join(unknown)}" if unknown else None
    return _Outcome(executor.run(compensate_now(definition, executor.state, reason)), detail=detail)


def _cancel(rt: Runtime, conn: Connection, saga: SagaRecord, cmd: SupportAction, now: datetime) -> _Outcome:
    """Cancel the order the saga carries: stop and undo a running or parked saga; after it completed, start
    the cancel saga (as the customer's cancel would)."""
    if saga.kind != ORDER_SAGA.kind:
        raise _refuse(saga, cmd, f"only an order saga can be cancelled; this is a {saga.kind} saga")
    if saga.cancel_requested or saga.status in (SagaStatus.COMPENSATING, SagaStatus.COMPENSATED):
        raise _refuse(saga, cmd, "it is already being undone or was undone")
    reason = f"cancelled by support ({cmd.actor.name}): {cmd.reason}"
    if saga.status is SagaStatus.FAILED:
        return _compensate(rt, conn, saga, cmd, now, cancel=True)
    if saga.status is SagaStatus.COMPLETED:
        if any(s.kind == CANCEL_SAGA.kind for s in repo.sagas_of_order(conn, saga.order_id)):
            raise _refuse(saga, cmd, "its order already has a cancel saga")
        started, dispatches = start_saga(conn, rt, rt.definitions[CANCEL_SAGA.kind], saga.order_id, now, reason)
        return _Outcome(dispatches, started.id, f"started cancel saga {started.id}")
    repo.update_saga(conn, saga.id, cancel_requested=True, reason=reason)
    saga.cancel_requested, saga.reason = True, reason
    return _Outcome(Executor(conn, saga, now, rt).handle(CancelRequested(reason)))


_ACTIONS: dict[Action, Any] = {
    Action.RETRY: _retry, Action.RESUME: _resume, Action.SKIP: _skip, Action.COMPENSATE: _compensate,
    Action.CANCEL: _cancel,
}


def record_refusal(rt: Runtime, cmd: SupportAction, why: str, state: str | None) -> None:
    """A refused action is on the record too (a bulk run's skipped sagas, say)."""
    with rt.db.transaction() as conn:
        write_audit(conn, rt.clock(), cmd.actor, cmd.action.value, cmd.reason, saga_id=cmd.saga_id, step=cmd.step,
                    bulk_token=cmd.bulk_token, state_before=state, state_after=state, outcome="refused",
                    detail=why)


def _compensation_begun(definition: SagaDefinition, saga: SagaRecord) -> bool:
    """A compensation step ran (or runs, or failed): the saga is on its way back."""
    return any(definition.is_compensation(name) and row.status not in (StepStatus.PENDING.value,
                                                                       StepStatus.SKIPPED.value)
               for name, row in saga.steps.items())


def allowed_actions(definition: SagaDefinition, saga: SagaRecord, order_has_cancel_saga: bool = False) -> list[str]:
    """The actions the saga's state allows now (what the console offers; each action checks again).
    `order_has_cancel_saga`: a completed order saga whose order is already being cancelled is not cancelled twice."""
    allowed = []
    step = failing_step(saga)
    settled = saga.status not in (SagaStatus.RUNNING, SagaStatus.COMPENSATING)
    undone = saga.status is SagaStatus.COMPENSATED or any(
        saga.steps[s.name].status == StepStatus.COMPENSATED.value for s in definition.compensations
        if s.name in saga.steps)
    comp_begun = _compensation_begun(definition, saga)
    if step is not None and settled and (definition.is_compensation(step) or not undone):
        allowed += [Action.RETRY.value, Action.SKIP.value]
    if saga.status is SagaStatus.FAILED and not comp_begun:
        allowed.append(Action.RESUME.value)
        if definition.compensations:
            allowed.append(Action.COMPENSATE.value)
    if (saga.kind == ORDER_SAGA.kind and not saga.cancel_requested
            and saga.status not in (SagaStatus.COMPENSATING, SagaStatus.COMPENSATED)
            and not (saga.status is SagaStatus.FAILED and comp_begun)  # cancel would compensate: refused
            and not (saga.status is SagaStatus.COMPLETED and order_has_cancel_saga)):
        allowed.append(Action.CANCEL.value)
    return allowed
