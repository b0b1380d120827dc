"""Retention of finished sagas, in process on SQLite: what goes (COMPLETED and COMPENSATED sagas finished before
the cutoff), what stays (active, parked, recent sagas; orders, read models, audit log), what the API answers for a
saga that went, the command's dry run and progress, bounded batches, and the schedule."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from api.app import create_app
from cli.main import main
from infra.broker import beat_schedule
from infra.config import Settings
from infra.tables import (
    audit_log,
    customer_orders,
    deliveries,
    notifications,
    orders,
    payments,
    saga_steps,
    saga_steps_archive,
    sagas,
    sagas_archive,
    step_attempts,
    step_attempts_archive,
)
from saga.order_saga import ORDER_SAGA
from services import retention
from services.support import Action, Actor, SupportAction, perform
from tests.support import api_client
from tests.unit.engine_fakes import Engine, engine_fixture

DAY = 86400.0
KEPT_TABLES = (orders, customer_orders, notifications, payments, deliveries, audit_log)
PAY_TRIES = ORDER_SAGA.step("pay").retry.max_attempts


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


def rows(engine: Engine, table: sa.Table) -> list[tuple[Any, ...]]:
    with engine.rt.db.reading() as conn:
        return [tuple(r) for r in conn.execute(sa.select(table).order_by(*table.primary_key.columns))]


def ids(engine: Engine, table: sa.Table) -> set[int]:
    with engine.rt.db.reading() as conn:
        return set(conn.execute(sa.select(table.c.id)).scalars())


def run(engine: Engine, days: float = 30, batch: int = 1000, mode: str = "archive", **kw: Any) -> retention.Report:
    return retention.run(engine.rt.db, days, batch, mode, clock=engine.clock, **kw)


def history(engine: Engine) -> dict[str, int]:
    """Sagas of every kind: old completed, old compensated, old parked (with an audit entry), an old completed one
    whose order is then cancelled (its cancel saga is recent), a recent completed one, a running one."""
    made = {"completed": engine.play().saga_id, "compensated": engine.play("charge", "declined").saga_id}
    engine.providers.script("charge", *["lost"] * PAY_TRIES)
    made["parked"] = engine.place().saga_id
    engine.settle()
    perform(engine.rt, SupportAction(made["parked"], Action("retry"), "asked the provider", Actor("al", "support")))
    engine.providers.script("charge", *["lost"] * PAY_TRIES)
    engine.settle()  # parked again, now with an audit entry
    made["cancelled"] = engine.play().saga_id
    engine.clock.advance(40 * DAY)
    engine.cancel(engine.saga(made["cancelled"]).order_id)
    engine.settle()
    made["cancel_saga"] = max(ids(engine, sagas))
    made["recent"] = engine.play().saga_id
    made["running"] = engine.place().saga_id  # its first step is published, never delivered
    return made


def test_old_finished_sagas_leave_and_active_parked_and_recent_ones_stay(engine: Engine) -> None:
    made = history(engine)
    kept_before = {t.name: rows(engine, t) for t in KEPT_TABLES}
    old = {made["completed"], made["compensated"], made["cancelled"]}
    with engine.rt.db.reading() as conn:
        old_steps = conn.execute(sa.select(sa.func.count()).select_from(saga_steps)
                                 .where(saga_steps.c.saga_id.in_(old))).scalar_one()
        old_attempts = conn.execute(sa.select(sa.func.count()).select_from(step_attempts)
                                    .where(step_attempts.c.saga_id.in_(old))).scalar_one()
    assert engine.saga(made["parked"]).status == "FAILED" and engine.saga(made["running"]).status == "RUNNING"

    report = run(engine)

    assert (report.sagas, report.steps, report.attempts) == (3, old_steps, old_attempts) and report.batches == 1
    assert ids(engine, sagas) == {made["parked"], made["cancel_saga"], made["recent"], made["running"]}
    assert ids(engine, sagas_archive) == old
    with engine.rt.db.reading() as conn:
        assert not conn.execute(sa.select(saga_steps).where(saga_steps.c.saga_id.in_(old))).first()
        assert not conn.execute(sa.select(step_attempts).where(step_attempts.c.saga_id.in_(old))).first()
        assert set(conn.execute(sa.select(saga_steps_archive.c.saga_id)).scalars()) == old
        assert len(rows(engine, saga_steps_archive)) == old_steps
        assert len(rows(engine, step_attempts_archive)) == old_attempts
        archived = {r.id: r for r in conn.execute(sa.select(sagas_archive))}
    assert archived[made["completed"]].status == "COMPLETED" and archived[made["completed"]].steps_kept
    assert archived[made["compensated"]].status == "COMPENSATED"
    assert archived[made["completed"]].archived_at == engine.clock()
    assert {t.name: rows(engine, t) for t in KEPT_TABLES} == kept_before  # orders, read models, audit log intact
    assert any(entry.saga_id == made["parked"] for entry in _audit(engine))
    assert run(engine).sagas == 0  # nothing left to move
    assert engine.run(made["completed"], "pay") == "not claimed"  # a late duplicate message finds nothing to do


def _audit(engine: Engine) -> list[Any]:
    with engine.rt.db.reading() as conn:
        return list(conn.execute(sa.select(audit_log)))


def test_delete_mode_removes_steps_and_attempts_and_keeps_the_saga_row_in_the_archive(engine: Engine) -> None:
    saga_id = engine.play().saga_id
    engine.clock.advance(31 * DAY)
    newer = engine.place().saga_id

    report = run(engine, mode="delete")

    assert report.sagas == 1 and report.steps == len(ORDER_SAGA.steps) and report.attempts > 0
    assert ids(engine, sagas) == {newer}
    with engine.rt.db.reading() as conn:
        assert set(conn.execute(sa.select(saga_steps.c.saga_id)).scalars()) == {newer}
    assert rows(engine, step_attempts) == []
    assert rows(engine, saga_steps_archive) == [] and rows(engine, step_attempts_archive) == []
    [row] = rows(engine, sagas_archive)
    assert row[0] == saga_id and row[-1] is False  # steps_kept


def test_the_api_answers_the_same_for_the_orders_and_410_for_the_saga(engine: Engine) -> None:
    made = history(engine)
    order_id = engine.saga(made["completed"]).order_id
    cancelled_order = engine.saga(made["cancelled"]).order_id
    app = create_app(engine.rt.settings, runtime=engine.rt)
    storefront, support = api_client(app), api_client(app, role="support")
    before = [storefront.get(f"/orders/{o}").get_json() for o in (order_id, cancelled_order)]
    mine = storefront.get("/customers/7/orders?page_size=100")
    assert mine.status_code == 200 and len(mine.get_json()) == 6

    run(engine)

    assert [storefront.get(f"/orders/{o}").get_json() for o in (order_id, cancelled_order)] == before
    again = storefront.get("/customers/7/orders?page_size=100")
    assert again.get_json() == mine.get_json() and again.headers["X-Pagination"] == mine.headers["X-Pagination"]
    gone = storefront.get(f"/sagas/{made['completed']}")
    assert gone.status_code == 410 and gone.mimetype == "application/problem+json"
    body = gone.get_json()
    assert (body["saga_id"], body["saga_status"], body["order_id"], body["steps_kept"]) == (
        made["completed"], "COMPLETED", order_id, True)
    assert "archived by retention" in body["detail"]
    assert support.get(f"/admin/sagas/{made['completed']}").status_code == 410
    acted = support.post(f"/admin/sagas/{made['completed']}/compensate", json={"reason": "too late"})
    assert acted.status_code == 410
    assert storefront.get("/sagas/999999").status_code == 404  # never existed: still 404
    assert support.get(f"/admin/sagas/{made['parked']}").status_code == 200


def test_an_order_whose_completed_saga_was_archived_can_still_be_cancelled(engine: Engine) -> None:
    placed = engine.play()
    engine.clock.advance(31 * DAY)
    engine.play()
    assert run(engine).sagas == 1

    view = engine.cancel(placed.order.id, "changed my mind")
    engine.settle()

    assert [s["kind"] for s in view.sagas] == ["order", "cancel"]
    assert engine.order(placed.order.id).status.value == "CANCELLED"
    assert len(engine.providers.refunds) == 1


def test_sqlite_keeps_the_newest_saga_so_no_saga_id_is_given_twice(engine: Engine) -> None:
    first = engine.play().saga_id
    engine.clock.advance(31 * DAY)

    assert run(engine).sagas == 0 and ids(engine, sagas) == {first}
    assert engine.place().saga_id == first + 1


def test_batches_are_bounded_and_a_pass_stops_after_its_batches(engine: Engine) -> None:
    made = [engine.play().saga_id for _ in range(5)]
    engine.clock.advance(31 * DAY)
    newest = engine.place().saga_id
    seen: list[int] = []

    first = run(engine, batch=2, max_batches=2, on_batch=lambda b: seen.append(b.sagas))

    assert seen == [2, 2] and first.sagas == 4 and ids(engine, sagas) == {made[-1], newest}  # oldest first
    rest = retention.retention_pass(engine.rt.db, 30, 2, "archive", 2, engine.clock)
    assert rest.sagas == 1 and rest.batches == 1 and ids(engine, sagas) == {newest}
    assert retention.retention_pass(engine.rt.db, 0, 2, "archive", 2, engine.clock).batches == 0  # 0: forever


def test_the_command_dry_run_changes_nothing_and_the_run_prints_batches(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    engine.clock.now = datetime.now(UTC) - timedelta(days=60)  # the command reads the real time
    made = [engine.play().saga_id for _ in range(3)]
    engine.clock.now = datetime.now(UTC)
    newest = engine.place().saga_id
    monkeypatch.setenv("DATABASE_URL", engine.rt.settings.database_url)
    monkeypatch.setenv("RETENTION_DAYS", "0")
    before = rows(engine, sagas)

    assert main(["retention", "run", "--older-than-days", "30", "--dry-run"]) == 0
    assert "dry run: 3 finished saga(s)" in capsys.readouterr().out and rows(engine, sagas) == before

    assert main(["retention", "run"]) == 2  # RETENTION_DAYS 0 and no --older-than-days: refused
    assert "kept forever" in capsys.readouterr().err

    assert main(["retention", "run", "--older-than-days", "30", "--batch", "2", "--mode", "delete"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("batch 1: 2 sagas") and out[2].startswith("batch 2: 1 sagas") and "rows/s" in out[1]
    assert out[-1].startswith("done: 3 sagas") and ids(engine, sagas) == {newest}
    assert ids(engine, sagas_archive) == set(made)


def test_settings_and_schedule() -> None:
    assert Settings.from_env({}).retention_days == 0
    assert "retention" not in beat_schedule(Settings.from_env({}))
    settings = Settings.from_env({"RETENTION_DAYS": "30", "RETENTION_INTERVAL_S": "600"})
    assert beat_schedule(settings)["retention"]["task"] == "saga.retention"
    assert beat_schedule(settings)["retention"]["schedule"] == 600
    with pytest.raises(ValueError, match="RETENTION_MODE"):
        Settings.from_env({"RETENTION_MODE": "shred"})
    with pytest.raises(ValueError, match="RETENTION_BATCH"):
        Settings.from_env({"RETENTION_BATCH": "0"})


def test_a_run_needs_days_and_a_known_mode(engine: Engine) -> None:
    with pytest.raises(ValueError, match="above 0"):
        run(engine, days=0)
    with pytest.raises(ValueError, match="archive or delete"):
        run(engine, mode="shred")


def test_the_worker_task_runs_a_bounded_pass(engine: Engine) -> None:
    from workers.app import create_celery

    for _ in range(3):
        engine.play()
    engine.clock.advance(31 * DAY)
    engine.place()
    settings = replace(engine.rt.settings, retention_days=30, retention_batch=1, retention_max_batches=2)
    app = create_celery(settings)
    app.conf.bookmarket_holder.runtime = engine.rt  # the worker's runtime: this engine's database and clock

    result = app.tasks["saga.retention"].apply().get()

    assert (result["sagas"], result["batches"]) == (2, 2) and len(ids(engine, sagas)) == 2
