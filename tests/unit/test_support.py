"""Support actions on real saga state (SQLite, fake providers and clock): each action, its refusals, the audit
trail, bulk plans against their runs, and the search."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from domain.errors import SagaNotFound
from domain.model import OrderStatus
from saga.order_saga import ORDER_SAGA
from services import bulk, saga_search
from services.bulk import BulkPlanExpired, BulkPlanNotFound
from services.saga_search import SagaFilter
from services.support import Action, ActionRefused, Actor, SupportAction, perform
from tests.unit.engine_fakes import Engine, engine_fixture, told

ALICE = Actor("alice", "support")
PAY_TRIES = ORDER_SAGA.step("pay").retry.max_attempts
SHIP_TRIES = ORDER_SAGA.step("ship").retry.max_attempts
NOTIFY_TRIES = ORDER_SAGA.step("notify").retry.max_attempts


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


def act(engine: Engine, saga_id: int, action: str, reason: str = "checked with the provider",
        step: str | None = None, actor: Actor = ALICE) -> object:
    engine.clock.advance(60)  # a person acts a while after the saga stopped
    return perform(engine.rt, SupportAction(saga_id, Action(action), reason, actor, step=step))


def parked_on_pay(engine: Engine, customer_id: int = 7) -> int:
    """A saga parked FAILED because pay's answers were lost every time (did it charge? nobody knows)."""
    engine.providers.script("charge", *["lost"] * PAY_TRIES)
    placed = engine.place(customer_id=customer_id)
    engine.settle()
    assert engine.saga(placed.saga_id).status == "FAILED"
    return placed.saga_id


def audit(engine: Engine, saga_id: int) -> list[dict]:
    return saga_search.audit_page(engine.rt, saga_id, None, 0, 100)[0]


# --- retry -------------------------------------------------------------------------------------------------------
def test_retry_runs_the_failed_step_again_with_the_same_key_and_the_saga_completes(engine: Engine) -> None:
    saga_id = parked_on_pay(engine)
    order_id = engine.saga(saga_id).order_id
    assert "parked for support" in engine.order(order_id).reason

    result = act(engine, saga_id, "retry", "provider says the charge went through")
    engine.settle()

    assert (result.state_before, result.state_after) == ("FAILED:pay", "RUNNING")
    assert engine.saga(saga_id).status == "COMPLETED"
    assert set(engine.providers.keys("charge")) == {f"saga-{saga_id}:pay"}
    assert len(engine.providers.charges) == 1  # the lost answers and the retry: one charge
    order = engine.order(order_id)
    assert order.status is OrderStatus.SHIPPED and order.reason is None
    [entry] = audit(engine, saga_id)
    assert (entry["actor"], entry["role"], entry["action"], entry["reason"], entry["outcome"]) == (
        "alice", "support", "retry", "provider says the charge went through", "done")
    assert (entry["state_before"], entry["state_after"], entry["step"]) == ("FAILED:pay", "RUNNING", "pay")


def test_retry_resends_a_failed_best_effort_notify_of_a_completed_saga(engine: Engine) -> None:
    engine.providers.script("send", "refused")
    placed = engine.place()
    engine.settle()
    saga_id = placed.saga_id
    assert engine.steps(saga_id)["notify"].status == "FAILED"
    assert engine.providers.messages == []

    act(engine, saga_id, "retry", "customer fixed their address")
    engine.settle()

    assert engine.saga(saga_id).status == "COMPLETED"
    assert engine.steps(saga_id)["notify"].status == "SUCCEEDED"
    assert engine.providers.messages == [told("shipped", placed.order.id)]


def test_retry_is_refused_while_the_saga_runs_or_when_nothing_failed(engine: Engine) -> None:
    placed = engine.place()
    with pytest.raises(ActionRefused, match="no step of it failed"):
        act(engine, placed.saga_id, "retry")
    engine.settle()
    with pytest.raises(ActionRefused, match="no step of it failed") as refused:
        act(engine, placed.saga_id, "retry")
    assert refused.value.state == "COMPLETED"
    [entry] = [e for e in audit(engine, placed.saga_id) if e["state_before"] == "COMPLETED"]
    assert entry["outcome"] == "refused" and "no step of it failed" in entry["detail"]


def test_a_second_retry_finds_the_saga_running_again_and_is_refused(engine: Engine) -> None:
    saga_id = parked_on_pay(engine)
    act(engine, saga_id, "retry")
    with pytest.raises(ActionRefused) as refused:
        act(engine, saga_id, "retry")
    assert refused.value.state == "RUNNING"
    engine.settle()
    assert len(engine.providers.charges) == 1


def test_an_unknown_saga_is_not_found(engine: Engine) -> None:
    with pytest.raises(SagaNotFound):
        act(engine, 999, "retry")


# --- skip ----------------------------------------------------------------------------------------------------------
def test_skip_records_the_step_as_resolved_by_hand_and_the_saga_goes_on(engine: Engine) -> None:
    saga_id = parked_on_pay(engine)
    charges_before = len(engine.providers.charges)

    result = act(engine, saga_id, "skip", "charged by phone, ticket 42")
    engine.settle()

    assert result.state_before == "FAILED:pay"
    pay = engine.steps(saga_id)["pay"]
    assert pay.status == "SUCCEEDED" and pay.outcome_unknown is False
    assert pay.error == "resolved by hand by alice: charged by phone, ticket 42"
    assert engine.saga(saga_id).status == "COMPLETED"
    assert len(engine.providers.charges) == charges_before  # no call for the skipped step
    assert engine.order(engine.saga(saga_id).order_id).status is OrderStatus.SHIPPED


def test_skip_of_a_failed_notify_leaves_the_saga_completed(engine: Engine) -> None:
    engine.providers.script("send", "refused")
    placed = engine.place()
    engine.settle()

    act(engine, placed.saga_id, "skip", "phoned the customer")

    assert engine.saga(placed.saga_id).status == "COMPLETED"
    assert engine.steps(placed.saga_id)["notify"].status == "SUCCEEDED"


# --- resume --------------------------------------------------------------------------------------------------------
def parked_on_ship(engine: Engine) -> int:
    engine.providers.script("ship", *["lost"] * SHIP_TRIES)
    placed = engine.place()
    engine.settle()
    assert engine.saga(placed.saga_id).status == "FAILED"
    return placed.saga_id


def test_resume_from_an_earlier_step_runs_it_and_those_after_it_again(engine: Engine) -> None:
    saga_id = parked_on_ship(engine)

    result = act(engine, saga_id, "resume", "delivery fixed their outage", step="confirm")
    engine.settle()

    assert result.state_before == "FAILED:ship"
    steps = engine.steps(saga_id)
    assert steps["pay"].attempts == 1  # before the chosen step: as it was
    assert steps["confirm"].attempts == 2 and steps["ship"].attempts == 1  # again, attempts from zero
    assert engine.saga(saga_id).status == "COMPLETED"
    assert len(engine.providers.charges) == 1 and len(engine.providers.shipments) == 1


def test_resume_refuses_a_step_whose_predecessors_did_not_succeed_or_an_unknown_step(engine: Engine) -> None:
    saga_id = parked_on_ship(engine)
    with pytest.raises(ActionRefused, match="ship did not"):
        act(engine, saga_id, "resume", step="mark_shipped")
    with pytest.raises(ActionRefused, match="forward steps"):
        act(engine, saga_id, "resume", step="cancel_payment")
    placed = engine.place()
    with pytest.raises(ActionRefused, match="only a parked"):
        act(engine, placed.saga_id, "resume", step="pay")


# --- compensate ----------------------------------------------------------------------------------------------------
def test_compensate_undoes_what_surely_succeeded_and_says_what_was_taken_as_not_done(engine: Engine) -> None:
    saga_id = parked_on_ship(engine)
    order_id = engine.saga(saga_id).order_id

    act(engine, saga_id, "compensate", "the shipment never left; undo it")
    engine.settle()

    saga = engine.saga(saga_id)
    assert saga.status == "COMPENSATED" and "compensated by support (alice)" in saga.reason
    assert len(engine.providers.refunds) == 1 and engine.providers.cancellations == []
    assert engine.order(order_id).status is OrderStatus.CANCELLED
    assert engine.providers.messages == [told("refunded", order_id)]
    [entry] = audit(engine, saga_id)
    assert entry["detail"] == "outcome unknown, taken as not done: ship"


def test_compensate_is_refused_for_a_running_or_completed_saga_and_once_compensation_began(engine: Engine) -> None:
    placed = engine.place()
    with pytest.raises(ActionRefused, match="cancel it instead"):
        act(engine, placed.saga_id, "compensate")
    engine.settle()
    with pytest.raises(ActionRefused, match="only a parked"):
        act(engine, placed.saga_id, "compensate")
    engine.providers.script("refund", "refused")
    engine.providers.script("ship", "refused")
    failed = engine.place()
    engine.settle()
    assert engine.saga(failed.saga_id).status == "FAILED"  # its refund failed for good
    with pytest.raises(ActionRefused, match="already begun"):
        act(engine, failed.saga_id, "compensate")


def test_retry_of_a_failed_refund_finishes_the_compensation(engine: Engine) -> None:
    engine.providers.script("refund", "refused")
    engine.providers.script("ship", "refused")
    placed = engine.place()
    engine.settle()
    assert engine.saga(placed.saga_id).status == "FAILED"

    result = act(engine, placed.saga_id, "retry", "refund provider fixed")
    engine.settle()

    assert (result.state_before, result.state_after) == ("FAILED:cancel_payment", "COMPENSATING:ship")
    assert engine.saga(placed.saga_id).status == "COMPENSATED"
    assert len(engine.providers.refunds) == 1


def test_a_forward_step_of_an_undone_saga_cannot_run_again(engine: Engine) -> None:
    engine.providers.script("ship", "refused")
    placed = engine.place()
    engine.settle()
    assert engine.saga(placed.saga_id).status == "COMPENSATED"
    for action in ("retry", "skip"):
        with pytest.raises(ActionRefused, match="undone"):
            act(engine, placed.saga_id, action)


# --- cancel --------------------------------------------------------------------------------------------------------
def test_cancel_of_a_parked_saga_undoes_it_and_the_order_ends_cancelled(engine: Engine) -> None:
    saga_id = parked_on_ship(engine)
    order_id = engine.saga(saga_id).order_id

    act(engine, saga_id, "cancel", "customer asked by phone")
    engine.settle()

    assert engine.saga(saga_id).status == "COMPENSATED"
    assert engine.order(order_id).status is OrderStatus.CANCELLED
    assert engine.providers.messages == [told("cancelled_refunded", order_id)]


def test_cancel_of_a_running_saga_acts_like_the_customers(engine: Engine) -> None:
    placed = engine.place()
    act(engine, placed.saga_id, "cancel", "fraud suspected")
    engine.settle()
    assert engine.order(placed.order.id).status is OrderStatus.CANCELLED
    assert "cancelled by support (alice): fraud suspected" in engine.saga(placed.saga_id).reason


def test_cancel_of_a_completed_saga_starts_the_cancel_saga_once(engine: Engine) -> None:
    placed = engine.place()
    engine.settle()
    result = act(engine, placed.saga_id, "cancel", "returned to the shop")
    engine.settle()
    assert result.started_saga_id is not None
    assert engine.saga(result.started_saga_id).kind == "cancel"
    assert engine.order(placed.order.id).status is OrderStatus.CANCELLED
    with pytest.raises(ActionRefused):
        act(engine, placed.saga_id, "cancel")
    with pytest.raises(ActionRefused, match="only an order saga"):
        act(engine, result.started_saga_id, "cancel")


# --- bulk ----------------------------------------------------------------------------------------------------------
def test_a_bulk_run_touches_only_the_planned_sagas_still_in_the_planned_state(engine: Engine) -> None:
    parked = [parked_on_pay(engine, customer_id=c) for c in (1, 2, 3)]
    engine.settle()
    other = engine.place()
    engine.settle()

    plan = bulk.plan(engine.rt, ALICE, Action.RETRY, "payment provider back",
                     SagaFilter(statuses=("FAILED",), failing_step="pay"))
    assert plan.total == 3 and plan.done == 0
    assert [s["saga_id"] for s in bulk.planned_sagas(engine.rt, plan.token, 0, 10)] == sorted(parked, reverse=True)
    assert {s["state"] for s in bulk.planned_sagas(engine.rt, plan.token, 0, 10)} == {"FAILED:pay"}

    act(engine, parked[0], "skip", "fixed by hand meanwhile")  # changes state between dry run and run
    first, results = bulk.run_batch(engine.rt, plan.token, Actor("bob", "support"), 2)
    assert (first.done, first.finished) == (2, False)
    final, more = bulk.run_batch(engine.rt, plan.token, Actor("bob", "support"), 2)
    engine.settle()

    assert (final.total, final.done, final.touched, final.skipped, final.finished) == (3, 3, 2, 1, True)
    outcomes = {r["saga_id"]: r["outcome"] for r in results + more}
    assert outcomes == {parked[0]: "skipped", parked[1]: "done", parked[2]: "done"}
    assert all(engine.saga(s).status == "COMPLETED" for s in parked)
    assert engine.saga(other.saga_id).status == "COMPLETED"
    entries = saga_search.audit_page(engine.rt, None, plan.token, 0, 10)[0]
    assert sorted((e["saga_id"], e["outcome"], e["actor"]) for e in entries) == sorted(
        [(parked[0], "refused", "bob"), (parked[1], "done", "bob"), (parked[2], "done", "bob")])
    assert bulk.run_batch(engine.rt, plan.token, ALICE, 5)[1] == []  # nothing left


def test_a_bulk_plan_expires_and_an_unknown_token_is_not_found(engine: Engine) -> None:
    parked_on_pay(engine)
    plan = bulk.plan(engine.rt, ALICE, Action.RETRY, "later", SagaFilter(statuses=("FAILED",)))
    engine.clock.advance(bulk.PLAN_TTL.total_seconds() + 1)
    with pytest.raises(BulkPlanExpired):
        bulk.run_batch(engine.rt, plan.token, ALICE, 10)
    with pytest.raises(BulkPlanNotFound):
        bulk.progress(engine.rt, "no-such-token")


# --- search --------------------------------------------------------------------------------------------------------
def test_search_filters_pages_and_counts(engine: Engine) -> None:
    parked = parked_on_pay(engine, customer_id=5)
    engine.providers.script("send", "refused")
    unsent = engine.place(customer_id=6)
    engine.settle()
    done = engine.place(customer_id=6)
    engine.settle()

    def ids(**kw: object) -> list[int]:
        return [r["id"] for r in saga_search.search(engine.rt, SagaFilter(**kw), 0, 50)[0]]

    assert ids() == [done.saga_id, unsent.saga_id, parked]  # newest first
    assert ids(statuses=("FAILED",)) == [parked]
    assert ids(failing_step="notify") == [unsent.saga_id]
    assert ids(error="READTIMEOUT") == [parked]  # any case, in a step's error
    assert ids(customer_id=6) == [done.saga_id, unsent.saga_id]
    assert ids(order_id=done.order.id) == [done.saga_id]
    assert ids(kind="cancel") == []
    assert ids(since=engine.clock() + timedelta(days=1)) == []
    assert ids(until=engine.clock() + timedelta(days=1)) == [done.saga_id, unsent.saga_id, parked]
    assert ids(error="100%_") == []  # LIKE wildcards are plain text
    rows, total = saga_search.search(engine.rt, SagaFilter(), 1, 1)
    assert total == 3 and [r["id"] for r in rows] == [unsent.saga_id]
    row = saga_search.search(engine.rt, SagaFilter(statuses=("FAILED",)), 0, 1)[0][0]
    assert row["failing_step"] == "pay" and "did not answer" in row["error"] and row["customer_id"] == 5

    counts = saga_search.counts(engine.rt, SagaFilter())
    assert counts == {"by_status": {"FAILED": 1, "COMPLETED": 2}, "by_failing_step": {"pay": 1, "notify": 1}}


def test_the_timeline_shows_steps_attempts_state_changes_audit_and_allowed_actions(engine: Engine) -> None:
    saga_id = parked_on_ship(engine)
    before = saga_search.timeline(engine.rt, saga_id)
    assert before["state"] == "FAILED:ship"
    assert set(before["actions"]) == {"retry", "skip", "resume", "compensate", "cancel"}
    act(engine, saga_id, "retry", "try again")
    engine.settle()

    view = saga_search.timeline(engine.rt, saga_id)
    assert [s["name"] for s in view["steps"]] == ["pay", "confirm", "ship", "mark_shipped", "notify"]
    ship = view["steps"][2]
    assert ship["status"] == "SUCCEEDED" and ship["attempts_list"][-1]["outcome"] == "SUCCEEDED"
    assert [c["status"] for c in view["state_changes"]][:2] == ["RUNNING", "FAILED"] or \
        "RUNNING" in [c["status"] for c in view["state_changes"]]
    assert [a["action"] for a in view["audit"]] == ["retry"]
    assert view["actions"] == ["cancel"]
    with pytest.raises(SagaNotFound):
        saga_search.timeline(engine.rt, 999)
