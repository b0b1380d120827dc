"""Running one provider step: claim it, call the provider outside any transaction, record the outcome."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Connection

from infra import metrics
from infra import repository as repo
from infra.breakers import ProviderBlocked
from infra.logs import log_context
from infra.providers import PaymentDeclined, ProviderError, ProviderRefused, ProviderReply
from infra.tracing import step_span
from saga.definition import SagaDefinition
from saga.orchestrator import (
    AttemptOutcome,
    Event,
    SagaStatus,
    StepBlocked,
    StepFailed,
    StepStatus,
    StepSucceeded,
)
from services.effects import StepContext, follow_context, step_context
from services.executor import Dispatch, Executor, InlineClaim, jitter
from services.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    context: StepContext
    number: int
    provider: str
    claimed_at: datetime  # when the attempt began, for its duration

    def log_fields(self) -> dict[str, object]:
        """What every log line of this attempt carries."""
        return {"saga_id": self.context.saga_id, "order_id": self.context.order.id, "step": self.context.step,
                "attempt": self.number}


class StepAttemptFailed(Exception):
    """A step's attempt failed and the engine has recorded it (and scheduled its retry, if any: the engine decides
    retries, not Celery). A step's task raises it last, so Flower shows the task as failed, with the error."""

    def __init__(self, saga_id: int, order_id: int, step: str, attempt: int, error: str) -> None:
        super().__init__(saga_id, order_id, step, attempt, error)  # its args rebuild it: Celery pickles it
        self.saga_id, self.order_id, self.step, self.attempt, self.error = saga_id, order_id, step, attempt, error

    def __str__(self) -> str:
        return f"saga={self.saga_id} order={self.order_id} step={self.step} attempt={self.attempt} failed: {self.error}"

    def __repr__(self) -> str:  # what Flower shows and the worker logs
        return f"StepAttemptFailed({str(self)!r})"


@dataclass(frozen=True)
class Ran:
    """One attempt a task ran and what came of it."""

    attempt: Attempt
    event: Event

    def __str__(self) -> str:
        return f"step={self.attempt.context.step} attempt={self.attempt.number} {type(self.event).__name__}"


def run_step(rt: Runtime, saga_id: int, step: str, task_id: str | None = None) -> str:
    """Run `step` of saga `saga_id` (and the steps it runs inline); "not claimed" or the last outcome's name."""
    ran = run_attempts(rt, saga_id, step, task_id)
    return type(ran[-1].event).__name__ if ran else "not claimed"


def run_task(rt: Runtime, saga_id: int, step: str, task_id: str | None = None) -> str:
    """run_step for a step's task: what it ran ("saga=12 order=34 step=pay attempt=1 StepSucceeded; ..."), or,
    once every outcome is recorded and published, StepAttemptFailed for the first attempt that failed."""
    ran = run_attempts(rt, saga_id, step, task_id)
    if not ran:
        log.info("saga %s step %s: not claimed (a repeated or late message, or the step is not open)", saga_id, step)
        return "not claimed"
    failed = next((r for r in ran if isinstance(r.event, StepFailed)), None)
    if failed is not None:
        assert isinstance(failed.event, StepFailed)
        ctx = failed.attempt.context
        raise StepAttemptFailed(saga_id, ctx.order_id, ctx.step, failed.attempt.number, failed.event.error)
    return f"saga={saga_id} order={ran[0].attempt.context.order_id} " + "; ".join(str(r) for r in ran)


def run_attempts(rt: Runtime, saga_id: int, step: str, task_id: str | None = None) -> list[Ran]:
    """Run `step` of saga `saga_id`; a duplicate or late delivery finds nothing to claim and does nothing.

    When the step's outcome opens the saga's next step at once, the transaction that records the outcome also
    claims that step, and this task runs it too (up to INLINE_STEPS of them) instead of sending it through the
    broker: if this process dies first, the claimed step's lease runs out and the sweeper recovers it.
    """
    with log_context(saga_id=saga_id, step=step):
        attempt = claim(rt, saga_id, step, task_id)
        ran: list[Ran] = []
        budget = rt.settings.inline_steps
        while attempt is not None:
            with log_context(**attempt.log_fields()):
                with step_span(saga_id, attempt.context.order_id, attempt.context.step, attempt.number):
                    event, reply = perform(rt, attempt.context, attempt.provider)
                inline = budget > 0 and not rt.draining.is_set()
                dispatches, follow = record(rt, attempt, event, reply, inline=inline, task_id=task_id)
                publish(rt, dispatches, attempt.context.order_id)
                log.info("saga %s step %s attempt %d: %s", attempt.context.saga_id, attempt.context.step,
                         attempt.number, type(event).__name__)
            ran.append(Ran(attempt, event))
            attempt, budget = follow, budget - 1
        return ran


def claim(rt: Runtime, saga_id: int, step: str, task_id: str | None) -> Attempt | None:
    """Take the step if it is open and its saga is in the phase it belongs to (forward or compensating)."""
    if rt.db.dialect == "postgresql":
        return _claim_at_once(rt, saga_id, step, task_id)
    with rt.db.transaction() as conn:
        found = repo.locked_saga_context(conn, saga_id)
        if found is None:
            return None
        definition = rt.definitions[found.kind]
        if found.status != _phase(definition, step):
            return None
        now = rt.clock()
        number = repo.claim_step(conn, saga_id, step, now, rt.settings.step_lease_s, task_id)
        if number is None:
            return None
        provider = definition.step(step).provider
        assert provider is not None, f"{step} calls no provider"
        context = step_context(definition, rt.steps, saga_id, step, found.context, found.cancel_requested)
        return Attempt(context, number, provider, now)


def _claim_at_once(rt: Runtime, saga_id: int, step: str, task_id: str | None) -> Attempt | None:
    """PostgreSQL: the same claim in one statement on an autocommit connection (one round trip, not four)."""
    now = rt.clock()
    with rt.db.autocommit() as conn:
        claimed = repo.claim_at_once(conn, saga_id, step, now, rt.settings.step_lease_s, task_id,
                                     _phases(rt.definitions, step))
    if claimed is None:
        return None
    found, number = claimed
    if number is None:
        return None
    definition = rt.definitions[found.kind]
    provider = definition.step(step).provider
    assert provider is not None, f"{step} calls no provider"
    context = step_context(definition, rt.steps, saga_id, step, found.context, found.cancel_requested)
    return Attempt(context, number, provider, now)


def _phases(definitions: Mapping[str, SagaDefinition], step: str) -> list[str]:
    """"kind:status" of every saga `step` may run in: each definition that has it, in the phase it belongs to."""
    return [f"{d.kind}:{_phase(d, step)}" for d in definitions.values() if any(s.name == step for s in d.all_steps)]


def _phase(definition: SagaDefinition, step: str) -> str:
    return (SagaStatus.COMPENSATING if definition.is_compensation(step) else SagaStatus.RUNNING).value


def perform(rt: Runtime, context: StepContext, provider: str) -> tuple[Event, object]:
    """Call the step's provider through its breaker and translate the answer into an orchestrator event."""
    action = rt.steps[context.step].call
    assert action is not None, f"{context.step} calls no provider"
    try:
        with rt.bulkheads.slot(provider):
            if rt.breakers is None:
                reply = action(rt.providers, context)
            else:
                reply = rt.breakers.call(provider, action, rt.providers, context)
    except ProviderBlocked as exc:  # its breaker is open, or its bulkhead full: wait, no attempt spent
        return StepBlocked(context.step, exc.retry_after_s + jitter()), exc
    except PaymentDeclined as exc:
        return StepFailed(context.step, str(exc), permanent=True), exc
    except ProviderRefused as exc:
        return StepFailed(context.step, str(exc), permanent=True), None
    except ProviderError as exc:
        log.warning("saga %s step %s: provider %s failed: %s", context.saga_id, context.step, provider, exc)
        return StepFailed(context.step, str(exc), jitter=jitter(), uncertain=exc.uncertain), None
    except Exception as exc:  # noqa: BLE001 - a bug must not strand the step: count it as a failed attempt
        log.exception("step %s of saga %s raised", context.step, context.saga_id)
        return StepFailed(context.step, f"{type(exc).__name__}: {exc}", permanent=False, jitter=jitter()), None
    return StepSucceeded(context.step), reply


def record(rt: Runtime, attempt: Attempt, event: Event, reply: object, inline: bool = False,
           task_id: str | None = None) -> tuple[list[Dispatch], Attempt | None]:
    """In one transaction: the step's outcome, its domain change and the orchestrator's next commands; and,
    when `inline`, the claim of this saga's next step for the caller to run (so it is not published)."""
    ctx = attempt.context
    now = rt.clock()
    with rt.db.transaction() as conn:
        saga = repo.load_saga(conn, ctx.saga_id, lock=True)
        assert saga is not None
        definition = rt.definitions[saga.kind]
        outcome = _outcome(definition.is_compensation(ctx.step), event)
        attempt_outcome = _attempt_outcome(outcome, event).value
        if not repo.close_step(conn, ctx.saga_id, ctx.step, attempt.number, outcome.value, now, _error(event, reply),
                               _reference(reply), _certainty(event), attempt_outcome):
            log.warning("saga %s step %s attempt %s lost its lease; outcome dropped", ctx.saga_id, ctx.step,
                        attempt.number)
            return [], None
        metrics.step_attempted(ctx.step, attempt_outcome, (now - attempt.claimed_at).total_seconds())
        claim = InlineClaim(task_id, rt.settings.step_lease_s, rt.publisher.queue_for(ctx.step)) if inline else None
        executor = Executor(conn, saga, now, rt, order=ctx.order, inline=claim)
        dispatches = executor.handle(event, outcome)
        _record_effects(conn, rt, executor, ctx, event, reply)
        if executor.claimed is None:
            return dispatches, None
        name, number = executor.claimed
        provider = definition.step(name).provider
        assert provider is not None, f"{name} calls no provider"
        succeeded = reply if isinstance(event, StepSucceeded) and isinstance(reply, ProviderReply) else None
        following = follow_context(definition, rt.steps, ctx, name, executor.order or ctx.order,
                                   executor.state.cancel_requested, succeeded)
        return dispatches, Attempt(following, number, provider, now)


def _outcome(is_compensation: bool, event: Event) -> StepStatus:
    if isinstance(event, StepSucceeded):
        return StepStatus.COMPENSATED if is_compensation else StepStatus.SUCCEEDED
    return StepStatus.FAILED


def _attempt_outcome(outcome: StepStatus, event: Event) -> AttemptOutcome:
    """A blocked step made no call and gets its attempt back: its timeline says so."""
    return AttemptOutcome.BLOCKED if isinstance(event, StepBlocked) else AttemptOutcome(outcome.value)


def _certainty(event: Event) -> bool | None:
    """An answer that may hide an effect marks the step (True); a definite answer (success, refusal) clears it
    (False); anything else leaves it as it was (None)."""
    if isinstance(event, StepSucceeded) or (isinstance(event, StepFailed) and event.permanent):
        return False
    if isinstance(event, StepFailed) and event.uncertain:
        return True
    return None


def _error(event: Event, reply: object) -> str | None:
    if isinstance(event, StepBlocked):
        return str(reply)
    return getattr(event, "error", None)


def _reference(reply: object) -> str | None:
    return getattr(reply, "reference", None) or None


def _record_effects(conn: Connection, rt: Runtime, executor: Executor, ctx: StepContext, event: Event,
                    reply: object) -> None:
    """What the step's outcome writes, as its entry in the step table says."""
    effects = rt.steps[ctx.step]
    if isinstance(event, StepSucceeded):
        assert isinstance(reply, ProviderReply)
        effects.on_success(conn, ctx, reply)
        return
    final = executor.state.step(ctx.step).status is StepStatus.FAILED
    effects.on_failure(conn, ctx, _error(event, reply) or "", final, isinstance(reply, PaymentDeclined))


def publish(rt: Runtime, dispatches: Sequence[Dispatch],
            orders: int | Mapping[int, int] | None = None) -> None:
    """Send the committed dispatches; what the broker refused is left to the sweeper. `orders`: the order of
    every dispatch's saga (one order id, or saga id -> order id), for Flower to show and find."""
    if isinstance(orders, int):
        orders = {saga_id: orders for saga_id, _ in dispatches}
    failed = rt.publisher.publish(dispatches, orders)
    if not failed:
        return
    try:
        with rt.db.transaction() as conn:
            repo.clear_dispatch(conn, failed)
    except Exception:  # noqa: BLE001 - what is committed stands; the sweeper re-sends after REDISPATCH_AFTER_S
        log.warning("could not mark %d unsent dispatch(es); the sweeper will re-send them later", len(failed),
                    exc_info=True)
