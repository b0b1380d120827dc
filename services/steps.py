"""Running one provider step: claim it, call the provider outside any transaction, record the outcome."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from domain.model import utcnow
from infra import repository as repo
from infra.breakers import ProviderBlocked
from infra.providers import PaymentDeclined, ProviderError, ProviderRefused, ProviderReply
from saga.definition import SagaDefinition
from saga.orchestrator import Event, SagaStatus, StepBlocked, StepFailed, StepStatus, StepSucceeded
from services.effects import StepContext, load_context, record_failure, record_success
from services.executor import Dispatch, Executor, jitter
from services.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    context: StepContext
    number: int
    provider: str


def run_step(rt: Runtime, saga_id: int, step: str, task_id: str | None = None) -> str:
    """Run `step` of saga `saga_id`; a duplicate or late delivery finds nothing to claim and does nothing.

    When the step's outcome opens the saga's next step at once, this task claims and runs that step too (up to
    INLINE_STEPS of them) instead of sending it through the broker: the step row is already committed as
    dispatched, so if this process dies first, the sweeper sends it after REDISPATCH_AFTER_S.
    """
    outcome, budget = "not claimed", rt.settings.inline_steps
    while True:
        attempt = claim(rt, saga_id, step, task_id)
        if attempt is None:
            return outcome
        event, reply = perform(rt, attempt.context, attempt.provider)
        dispatches = record(rt, attempt, event, reply)
        outcome = type(event).__name__
        follow = next((d for d in dispatches if d[0] == saga_id), None) if budget > 0 else None
        publish(rt, [d for d in dispatches if d != follow])
        if follow is None:
            return outcome
        budget, step = budget - 1, follow[1]


def claim(rt: Runtime, saga_id: int, step: str, task_id: str | None) -> Attempt | None:
    """Take the step if it is open and its saga is in the phase it belongs to (forward or compensating)."""
    with rt.db.transaction() as conn:
        saga = repo.saga_row(conn, saga_id, lock=True)
        if saga is None or saga.status != _phase(rt.definitions[saga.kind], step):
            return None
        number = repo.claim_step(conn, saga_id, step, rt.settings.step_lease_s, task_id)
        if number is None:
            return None
        provider = rt.definitions[saga.kind].step(step).provider
        assert provider is not None, f"{step} calls no provider"
        return Attempt(load_context(conn, saga_id, step, saga.order_id), number, provider)


def _phase(definition: SagaDefinition, step: str) -> str:
    return (SagaStatus.COMPENSATING if definition.is_compensation(step) else SagaStatus.RUNNING).value


def perform(rt: Runtime, context: StepContext, provider: str) -> tuple[Event, object]:
    """Call the step's provider through its breaker and translate the answer into an orchestrator event."""
    action = rt.actions[context.step]
    try:
        if rt.breakers is None:
            reply = action(rt.providers, context)
        else:
            reply = rt.breakers.call(provider, action, rt.providers, context)
    except ProviderBlocked as exc:
        return StepBlocked(context.step, exc.retry_after_s + jitter()), exc
    except PaymentDeclined as exc:
        return StepFailed(context.step, str(exc), permanent=True), exc
    except ProviderRefused as exc:
        return StepFailed(context.step, str(exc), permanent=True), None
    except ProviderError as exc:
        return StepFailed(context.step, str(exc), jitter=jitter(), uncertain=exc.uncertain), None
    except Exception as exc:  # noqa: BLE001 - a bug must not strand the step: count it as a failed attempt
        log.exception("step %s of saga %s raised", context.step, context.saga_id)
        return StepFailed(context.step, f"{type(exc).__name__}: {exc}", permanent=False, jitter=jitter()), None
    return StepSucceeded(context.step), reply


def record(rt: Runtime, attempt: Attempt, event: Event, reply: object) -> list[Dispatch]:
    """In one transaction: the step's outcome, its domain change, and the orchestrator's next commands."""
    ctx = attempt.context
    now = utcnow()
    with rt.db.transaction() as conn:
        saga = repo.load_saga(conn, ctx.saga_id, lock=True)
        assert saga is not None
        definition = rt.definitions[saga.kind]
        outcome = _outcome(definition.is_compensation(ctx.step), event)
        values = {"status": outcome.value, "finished_at": now, "error": _error(event, reply), **_reference(reply),
                  **_certainty(event)}
        if not repo.close_step(conn, ctx.saga_id, ctx.step, attempt.number, values):
            log.warning("saga %s step %s attempt %s lost its lease; outcome dropped", ctx.saga_id, ctx.step,
                        attempt.number)
            return []
        executor = Executor(conn, saga, now, rt.definitions, order=ctx.order)
        dispatches = executor.handle(event, outcome)
        _record_effects(conn, executor, ctx, event, reply)
        return dispatches


def _outcome(is_compensation: bool, event: Event) -> StepStatus:
    if isinstance(event, StepSucceeded):
        return StepStatus.COMPENSATED if is_compensation else StepStatus.SUCCEEDED
    return StepStatus.FAILED


def _certainty(event: Event) -> dict[str, bool]:
    """An answer that may hide an effect marks the step; a definite answer (success, refusal) clears it."""
    if isinstance(event, StepSucceeded) or (isinstance(event, StepFailed) and event.permanent):
        return {"outcome_unknown": False}
    if isinstance(event, StepFailed) and event.uncertain:
        return {"outcome_unknown": True}
    return {}


def _error(event: Event, reply: object) -> str | None:
    if isinstance(event, StepBlocked):
        return str(reply)
    return getattr(event, "error", None)


def _reference(reply: object) -> dict[str, str]:
    reference = getattr(reply, "reference", None)
    return {"provider_ref": reference} if reference else {}


def _record_effects(conn: Connection, executor: Executor, ctx: StepContext, event: Event, reply: object) -> None:
    if isinstance(event, StepSucceeded):
        assert isinstance(reply, ProviderReply)
        record_success(conn, ctx, reply)
        return
    final = executor.state.step(ctx.step).status is StepStatus.FAILED
    record_failure(conn, ctx, _error(event, reply) or "", final, isinstance(reply, PaymentDeclined))


def publish(rt: Runtime, dispatches: Sequence[Dispatch]) -> None:
    """Send the committed dispatches; what the broker refused is left to the sweeper."""
    failed = rt.publisher.publish(dispatches)
    if not failed:
        return
    try:
        with rt.db.transaction() as conn:
            repo.clear_dispatch(conn, failed)
    except Exception:  # noqa: BLE001 - what is committed stands; the sweeper re-sends after REDISPATCH_AFTER_S
        log.warning("could not mark %d unsent dispatch(es); the sweeper will re-send them later", len(failed),
                    exc_info=True)
