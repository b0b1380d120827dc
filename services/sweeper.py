"""The recovery sweeper: sends what was committed but never sent, takes back steps whose worker vanished, and
forgets Idempotency-Keys older than IDEMPOTENCY_KEY_TTL_S."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from infra import metrics
from infra import repository as repo
from saga.orchestrator import AttemptOutcome, FinishSaga, SagaStatus, StepFailed, StepStatus
from services.executor import Dispatch, Executor, jitter
from services.runtime import Runtime
from services.steps import publish

log = logging.getLogger(__name__)

BATCH = 500


@dataclass(frozen=True)
class SweepReport:
    dispatched: int
    recovered: int
    parked: int
    forgotten_keys: int = 0


def sweep(rt: Runtime) -> SweepReport:
    """One pass: recover expired leases, then publish every due and unsent step."""
    recovered, parked = 0, 0
    now = rt.clock()
    with rt.db.reading() as conn:
        expired = repo.expired_leases(conn, now, BATCH)
    for saga_id, step in expired:
        outcome = recover(rt, saga_id, step)
        recovered += outcome == "recovered"
        parked += outcome == "parked"
    dispatched = dispatch_due(rt)
    forgotten = forget_idempotency_keys(rt)
    if dispatched or recovered or parked or forgotten:
        log.info("sweep: dispatched=%d recovered=%d parked=%d forgotten_keys=%d", dispatched, recovered, parked,
                 forgotten)
    return SweepReport(dispatched, recovered, parked, forgotten)


def forget_idempotency_keys(rt: Runtime) -> int:
    """Forget the Idempotency-Keys of orders placed more than IDEMPOTENCY_KEY_TTL_S ago (a batch per pass, oldest
    first): a retry within the TTL finds its order, the same key later places a new one. TTL 0: kept forever."""
    ttl_s = rt.settings.idempotency_key_ttl_s
    if ttl_s <= 0:
        return 0
    with rt.db.transaction() as conn:
        return repo.forget_idempotency_keys(conn, rt.clock() - timedelta(seconds=ttl_s), BATCH)


def dispatch_due(rt: Runtime) -> int:
    """Publish due steps that were never sent, or were sent so long ago that the message was surely lost."""
    now = rt.clock()
    with rt.db.transaction() as conn:
        due = repo.due_dispatches(conn, now, now - timedelta(seconds=rt.settings.redispatch_after_s), BATCH)
        repo.mark_dispatched(conn, due, now)
        orders = repo.orders_of_sagas(conn, {saga_id for saga_id, _ in due}) if due else {}
    publish(rt, due, orders)
    return len(due)


def recover(rt: Runtime, saga_id: int, step: str) -> str:
    """A step RUNNING past its lease counts as a failed attempt; a saga recovered too often is parked FAILED."""
    now = rt.clock()
    dispatches: list[Dispatch] = []
    with rt.db.transaction() as conn:
        saga = repo.load_saga(conn, saga_id, lock=True)
        row = saga.steps.get(step) if saga else None
        if saga is None or row is None or not row.lease_expired(now):
            return "gone"
        recoveries = (repo.saga_row(conn, saga_id).recoveries or 0) + 1
        error = f"lease expired: the worker running attempt {row.attempts} was lost"
        repo.close_step(conn, saga_id, step, row.attempts, StepStatus.FAILED.value, now, error, outcome_unknown=True,
                        attempt_outcome=AttemptOutcome.LOST.value)
        repo.update_saga(conn, saga_id, recoveries=recoveries)
        metrics.step_attempted(step, AttemptOutcome.LOST.value)
        executor = Executor(conn, saga, now, rt)
        if recoveries > rt.settings.max_recoveries:
            reason = f"parked after {recoveries} recoveries: {error} (step {step})"
            executor.run([FinishSaga(SagaStatus.FAILED, reason)])
            return "parked"
        lost = StepFailed(step, error, jitter=jitter(), uncertain=True)  # the call may have been made
        dispatches = executor.handle(lost, StepStatus.FAILED)
    publish(rt, dispatches, saga.order_id)
    return "recovered"

