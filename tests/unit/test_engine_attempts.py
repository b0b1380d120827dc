"""Every attempt of every step is kept and a saga's timeline shows them: the real services (run_step, sweep,
record, saga_timeline) on fake providers and a moved clock. One contract, two databases: SQLite here, in the fast
tier; PostgreSQL, where closing a step and keeping its attempt is one statement, in
tests/integration/test_step_attempts.py."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domain.errors import SagaNotFound
from domain.model import OrderStatus
from infra import repository as repo
from services.steps import perform, record
from services.timeline import saga_timeline
from tests.unit.engine_fakes import Engine, make_engine, vanish_after_the_call


def attempts(engine: Engine, saga_id: int, step: str) -> list[Any]:
    with engine.rt.db.reading() as conn:
        return [row for row in repo.saga_attempts(conn, saga_id) if row.step == step]


def outcomes(engine: Engine, saga_id: int, step: str) -> list[tuple[int, str]]:
    return [(row.attempt, row.outcome) for row in attempts(engine, saga_id, step)]


def tasks_that_ran(engine: Engine, saga_id: int, step: str) -> list[str]:
    """The task id of each run_step call the driver made for `step` (task-<n>, n counting every call)."""
    return [f"task-{n}" for n, (saga, name, _) in enumerate(engine.runs, 1) if (saga, name) == (saga_id, step)]


class StepAttemptsContract:
    """The tests; a subclass gives them an `engine` fixture on its database."""

    def test_a_step_that_fails_twice_then_succeeds_keeps_three_attempts(self, engine: Engine) -> None:
        placed = engine.play("charge", "transient", "lost")

        pay = attempts(engine, placed.saga_id, "pay")
        assert [(a.attempt, a.outcome, a.outcome_unknown) for a in pay] == [
            (1, "FAILED", False), (2, "FAILED", True), (3, "SUCCEEDED", False)]
        assert [a.error for a in pay] == ["charge answered 503: busy", "charge did not answer: ReadTimeoutError",
                                          None]
        assert [a.provider_ref for a in pay] == [None, None, engine.providers.charges[0].reference]
        assert [a.task_id for a in pay] == tasks_that_ran(engine, placed.saga_id, "pay")
        assert all(a.started_at <= a.finished_at for a in pay)
        assert pay[0].finished_at < pay[1].started_at and pay[1].finished_at < pay[2].started_at
        assert engine.steps(placed.saga_id)["pay"].attempts == 3
        assert engine.order(placed.order.id).status is OrderStatus.SHIPPED

    def test_a_blocked_attempt_is_kept_as_blocked_and_its_number_comes_again(self, engine: Engine) -> None:
        engine.providers.script("charge", "transient")
        placed = engine.place()
        engine.deliver()  # attempt 1 fails; its retry will find the breaker open
        engine.breakers.open("payment", retry_after_s=20)
        engine.settle()

        assert outcomes(engine, placed.saga_id, "pay") == [(1, "FAILED"), (2, "BLOCKED"), (2, "SUCCEEDED")]
        blocked = attempts(engine, placed.saga_id, "pay")[1]
        assert "circuit open" in blocked.error and blocked.provider_ref is None and not blocked.outcome_unknown
        assert engine.steps(placed.saga_id)["pay"].attempts == 2
        assert engine.providers.keys("charge") == [f"saga-{placed.saga_id}:pay"] * 2  # the blocked one: no call

    def test_a_lease_taken_back_by_the_sweeper_leaves_a_lost_attempt(self, engine: Engine) -> None:
        placed = engine.place()
        vanish_after_the_call(engine, placed.saga_id, "pay")
        engine.clock.advance(engine.rt.settings.step_lease_s + 1)
        assert engine.sweep().recovered == 1

        lost = attempts(engine, placed.saga_id, "pay")
        assert [(a.attempt, a.outcome, a.outcome_unknown, a.task_id) for a in lost] == [(1, "LOST", True, "doomed")]
        assert lost[0].error.startswith("lease expired") and lost[0].finished_at == engine.clock()
        engine.settle()
        assert outcomes(engine, placed.saga_id, "pay") == [(1, "LOST"), (2, "SUCCEEDED")]

    def test_a_late_close_of_an_attempt_whose_lease_was_taken_back_keeps_nothing(self, engine: Engine) -> None:
        placed = engine.place()
        attempt = vanish_after_the_call(engine, placed.saga_id, "pay")
        engine.clock.advance(engine.rt.settings.step_lease_s + 1)
        engine.sweep()

        assert record(engine.rt, attempt, *perform(engine.rt, attempt.context, attempt.provider)) == ([], None)
        assert outcomes(engine, placed.saga_id, "pay") == [(1, "LOST")]

    def test_the_timeline_shows_steps_in_order_with_their_attempts_and_local_steps_from_their_row(
            self, engine: Engine) -> None:
        engine.providers.script("charge", "transient")
        placed = engine.play("ship", "refused")  # charged, then shipping refused: refund and tell the customer

        timeline = saga_timeline(engine.rt, placed.saga_id)

        assert (timeline.id, timeline.kind, timeline.order_id, timeline.status) == (
            placed.saga_id, "order", placed.order.id, "COMPENSATED")
        assert timeline.finished_at is not None and timeline.reason.startswith("ship failed")
        assert [s.name for s in timeline.steps] == ["pay", "confirm", "ship", "mark_shipped", "notify",
                                                    "cancel_payment", "notify_outcome"]
        assert [s.position for s in timeline.steps] == sorted(s.position for s in timeline.steps)
        steps = {s.name: s for s in timeline.steps}
        assert [(a.attempt, a.outcome) for a in steps["pay"].history] == [(1, "FAILED"), (2, "SUCCEEDED")]
        assert [(a.attempt, a.outcome, a.error) for a in steps["ship"].history] == [
            (1, "FAILED", "ship answered 422: refused")]
        assert [(a.outcome, a.provider_ref) for a in steps["cancel_payment"].history] == [
            ("COMPENSATED", engine.providers.refunds[0].reference)]
        confirm = steps["confirm"]
        assert confirm.local and [(a.attempt, a.outcome, a.started_at) for a in confirm.history] == [
            (1, "SUCCEEDED", confirm.started_at)]
        assert steps["mark_shipped"].status == "SKIPPED" and steps["mark_shipped"].history == []
        assert (steps["pay"].attempts, steps["pay"].max_attempts, steps["pay"].provider_ref) == (
            2, 5, engine.providers.charges[0].reference)
        assert dataclasses.asdict(timeline)["steps"][0]["history"][1]["outcome"] == "SUCCEEDED"

    def test_the_timeline_of_an_unknown_saga_is_not_found(self, engine: Engine) -> None:
        with pytest.raises(SagaNotFound):
            saga_timeline(engine.rt, 999)


class TestStepAttemptsOnSQLite(StepAttemptsContract):
    @pytest.fixture
    def engine(self, tmp_path: Path) -> Iterator[Engine]:
        engine = make_engine(tmp_path)
        yield engine
        engine.rt.close()
