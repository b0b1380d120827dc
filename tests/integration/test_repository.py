"""The step table's hot statements on SQLite (through SQLAlchemy) and PostgreSQL (straight through psycopg, see
infra/fastsql.py): the same calls must give the same answers on both."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from domain.model import Order, utcnow
from infra import repository as repo
from infra.db import Database, sqlite_url_for
from infra.migrate import upgrade
from infra.tables import step_attempts
from saga.order_saga import ORDER_SAGA
from tests.conftest import create_pg_database

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path, postgres_server: str) -> Iterator[Database]:
    if request.param == "sqlite":
        yield from _migrated(sqlite_url_for(tmp_path), lambda: None)
    else:
        yield from _migrated(*create_pg_database(postgres_server))


def _migrated(url: str, drop: Callable[[], None]) -> Iterator[Database]:
    upgrade(url)
    database = Database.from_url(url)
    yield database
    database.dispose()
    drop()


def new_saga(db: Database) -> repo.SagaRecord:
    now = utcnow()
    with db.transaction() as conn:
        book = repo.get_book(conn, 1)
        assert book is not None and book.id == 1
        order = Order.place(7, book, 2)
        order_id = repo.add_order(conn, order, None)
        saga = repo.create_saga(conn, ORDER_SAGA, order_id, now, dispatched="pay")
        repo.add_customer_order(conn, order, book.title, saga.id)
        return saga


def test_claim_is_a_compare_and_set_and_close_checks_the_attempt(db: Database) -> None:
    saga = new_saga(db)
    with db.transaction() as conn:
        assert repo.claim_step(conn, saga.id, "pay", utcnow(), 30, "task-1") == 1
        assert repo.claim_step(conn, saga.id, "pay", utcnow(), 30, "task-2") is None  # RUNNING: not open any more
        assert not repo.close_step(conn, saga.id, "pay", 2, "SUCCEEDED", utcnow(), None, "ch_1")  # wrong attempt
        assert repo.close_step(conn, saga.id, "pay", 1, "SUCCEEDED", utcnow(), None, "ch_1", outcome_unknown=False)
        assert repo.claim_step(conn, saga.id, "pay", utcnow(), 30, "task-3") is None
    with db.reading() as conn:
        row = next(r for r in repo.saga_step_rows(conn, saga.id) if r.name == "pay")
    assert (row.status, row.attempts, row.provider_ref, row.task_id, row.lease_until) == (
        "SUCCEEDED", 1, "ch_1", "task-1", None)


def test_close_keeps_the_reference_and_the_uncertainty_unless_told(db: Database) -> None:
    saga = new_saga(db)
    with db.transaction() as conn:
        repo.claim_step(conn, saga.id, "pay", utcnow(), 30, None)
        repo.close_step(conn, saga.id, "pay", 1, "FAILED", utcnow(), "timeout", outcome_unknown=True)
        repo.open_step(conn, saga.id, "pay", 0, 5, utcnow(), utcnow())
        assert repo.claim_step(conn, saga.id, "pay", utcnow(), 30, None) == 2
        repo.close_step(conn, saga.id, "pay", 2, "FAILED", utcnow(), "answered 503")
    with db.reading() as conn:
        row = next(r for r in repo.saga_step_rows(conn, saga.id) if r.name == "pay")
    assert (row.status, row.outcome_unknown, row.provider_ref, row.error) == ("FAILED", True, None, "answered 503")


def test_a_close_keeps_its_attempt_once_and_a_repeated_or_wrong_close_keeps_nothing(db: Database) -> None:
    saga = new_saga(db)
    with db.transaction() as conn:
        started = utcnow()
        repo.claim_step(conn, saga.id, "pay", started, 30, "task-1")
        assert not repo.close_step(conn, saga.id, "pay", 2, "SUCCEEDED", utcnow(), None, "ch_1")  # wrong attempt
        assert repo.saga_attempts(conn, saga.id) == []
        assert repo.close_step(conn, saga.id, "pay", 1, "SUCCEEDED", utcnow(), None, "ch_1", outcome_unknown=False)
        assert not repo.close_step(conn, saga.id, "pay", 1, "FAILED", utcnow(), "late", outcome_unknown=True)
        kept = repo.saga_attempts(conn, saga.id)
    assert [(a.step, a.attempt, a.outcome, a.error, a.task_id, a.provider_ref, a.outcome_unknown, a.position)
            for a in kept] == [("pay", 1, "SUCCEEDED", None, "task-1", "ch_1", False, 0)]
    assert kept[0].started_at == started and kept[0].started_at.utcoffset() == timedelta(0)
    with pytest.raises(sa.exc.IntegrityError):  # the key refuses the same attempt twice
        with db.transaction() as conn:
            conn.execute(step_attempts.insert(), {c: getattr(kept[0], c) for c in step_attempts.c.keys()})


def test_an_attempt_keeps_its_own_reference_and_uncertainty_and_a_given_back_number_comes_again(
        db: Database) -> None:
    saga = new_saga(db)
    with db.transaction() as conn:
        repo.claim_step(conn, saga.id, "pay", utcnow(), 30, "task-1")
        repo.close_step(conn, saga.id, "pay", 1, "FAILED", utcnow(), "circuit open", attempt_outcome="BLOCKED")
        repo.update_step(conn, saga.id, "pay", status="WAITING", attempts=0, dispatched_at=utcnow())
        assert repo.claim_step(conn, saga.id, "pay", utcnow(), 30, "task-2") == 1
        repo.close_step(conn, saga.id, "pay", 1, "FAILED", utcnow(), "timeout", "ch_1", outcome_unknown=True)
        repo.open_step(conn, saga.id, "pay", 0, 5, utcnow(), utcnow())
        assert repo.claim_step(conn, saga.id, "pay", utcnow(), 30, "task-3") == 2
        repo.close_step(conn, saga.id, "pay", 2, "FAILED", utcnow(), "answered 503")
        kept = repo.saga_attempts(conn, saga.id)
        step = next(r for r in repo.saga_step_rows(conn, saga.id) if r.name == "pay")
    assert [(a.attempt, a.outcome, a.error, a.task_id, a.provider_ref, a.outcome_unknown) for a in kept] == [
        (1, "BLOCKED", "circuit open", "task-1", None, False),
        (1, "FAILED", "timeout", "task-2", "ch_1", True),
        (2, "FAILED", "answered 503", "task-3", None, False),
    ]
    assert (step.provider_ref, step.outcome_unknown) == ("ch_1", True)  # the step carries them over


def test_load_saga_and_the_claim_context_read_back_what_was_written(db: Database) -> None:
    saga = new_saga(db)
    now = utcnow()
    with db.transaction() as conn:
        repo.finish_local_step(conn, saga.id, "confirm", "SUCCEEDED", 1, now, None)
        assert repo.open_claimed_step(conn, saga.id, "ship", 2, 8, now, 30, "task-9") == 1
        repo.save_payment(conn, saga.order_id, status="CHARGED", amount_cents=8598, charge_ref="ch_9")
        loaded = repo.load_saga(conn, saga.id, lock=True)
        found = repo.locked_saga_context(conn, saga.id)
    assert loaded is not None and found is not None
    assert (loaded.kind, loaded.order_id, loaded.status.value, loaded.cancel_requested) == (
        "order", saga.order_id, "RUNNING", False)
    assert list(loaded.steps) == ["pay", "confirm", "ship", "mark_shipped", "notify"]
    ship = loaded.steps["ship"]
    assert (ship.status, ship.attempts, ship.position) == ("RUNNING", 1, 2)
    assert ship.lease_until is not None and ship.lease_until.utcoffset() == timedelta(0)
    assert abs(ship.lease_until - (now + timedelta(seconds=30))) < timedelta(seconds=1)
    assert loaded.steps["confirm"].status == "SUCCEEDED"
    context = found.context
    assert (found.kind, found.status, found.cancel_requested) == ("order", "RUNNING", False)
    assert (context.charge_ref, context.shipment_ref) == ("ch_9", None)
    assert (context.order.id, context.order.customer_id, context.order.qty, context.order.amount_cents) == (
        saga.order_id, 7, 2, 8598)
    assert context.order.created_at.utcoffset() == timedelta(0)


def test_skip_open_steps_leaves_running_and_finished_steps_alone(db: Database) -> None:
    saga = new_saga(db)
    with db.transaction() as conn:
        repo.claim_step(conn, saga.id, "pay", utcnow(), 30, None)
        repo.finish_local_step(conn, saga.id, "confirm", "SUCCEEDED", 1, utcnow(), None)
        repo.skip_open_steps(conn, saga.id, utcnow())
        statuses = {r.name: r.status for r in repo.saga_step_rows(conn, saga.id)}
    assert statuses == {"pay": "RUNNING", "confirm": "SUCCEEDED", "ship": "SKIPPED", "mark_shipped": "SKIPPED",
                        "notify": "SKIPPED"}


def test_a_dropped_connection_raises_sqlalchemy_errors_and_the_next_transaction_gets_a_fresh_one(
        postgres_server: str) -> None:
    url, drop = create_pg_database(postgres_server)
    try:
        upgrade(url)
        db = Database.from_url(url)
        saga = new_saga(db)
        with pytest.raises(sa.exc.OperationalError) as caught:  # what the API answers 503 for
            with db.transaction() as conn:
                pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
                with db.engine.connect() as killer:
                    killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
                repo.load_saga(conn, saga.id, lock=True)  # the fast path, on a connection the server dropped
        assert caught.value.connection_invalidated
        with pytest.raises(sa.exc.IntegrityError):  # a constraint error keeps its SQLAlchemy class too
            with db.transaction() as conn:
                assert repo.claim_step(conn, saga.id, "pay", utcnow(), 30, None) == 1
                repo.close_step(conn, saga.id, "pay", 1, None, utcnow(), None)  # type: ignore[arg-type]
        with db.transaction() as conn:  # both rolled back; a fresh connection claims the step
            assert repo.claim_step(conn, saga.id, "pay", utcnow(), 30, None) == 1
        db.dispose()
    finally:
        drop()


def test_a_locked_load_that_waited_for_the_lock_sees_the_steps_the_holder_committed(postgres_server: str) -> None:
    """Under READ COMMITTED a statement that waits for a row lock reads other tables as of its own start: the
    saga's steps must be read after the lock is held, or a cancel that waited for a claim takes `pay` for PENDING."""
    url, drop = create_pg_database(postgres_server)
    try:
        upgrade(url)
        db = Database.from_url(url)
        saga = new_saga(db)
        loaded: list[repo.SagaRecord | None] = []
        with db.transaction() as holder:
            assert repo.lock_saga(holder, saga.id)
            waiter = threading.Thread(target=lambda: loaded.append(_load_locked(db, saga.id)))
            waiter.start()
            time.sleep(0.3)  # the waiter's statement has started and waits for the saga lock
            assert repo.claim_step(holder, saga.id, "pay", utcnow(), 30, None) == 1
        waiter.join(10)
        assert loaded and loaded[0] is not None
        assert loaded[0].steps["pay"].status == "RUNNING"
        db.dispose()
    finally:
        drop()


def _load_locked(db: Database, saga_id: int) -> repo.SagaRecord | None:
    with db.transaction() as conn:
        return repo.load_saga(conn, saga_id, lock=True)


@pytest.fixture
def pg(postgres_server: str) -> Iterator[Database]:
    yield from _migrated(*create_pg_database(postgres_server))


def _claim_at_once(db: Database, saga_id: int, step: str = "pay",
                   phases: tuple[str, ...] = ("order:RUNNING",)) -> tuple[repo.ClaimContext, int | None] | None:
    with db.autocommit() as conn:
        return repo.claim_at_once(conn, saga_id, step, utcnow(), 30, "task-1", phases)


def test_the_one_statement_claim_takes_an_open_sent_step_once_and_only_in_its_phase(pg: Database) -> None:
    saga = new_saga(pg)
    assert _claim_at_once(pg, saga.id + 1000) is None  # no such saga
    found, number = _claim_at_once(pg, saga.id, phases=("order:COMPENSATING", "cancel:RUNNING")) or (None, -1)
    assert found is not None and number is None  # the saga is not in a phase `pay` runs in
    assert _claim_at_once(pg, saga.id, "ship") == (found, None)  # ship was never sent
    found, number = _claim_at_once(pg, saga.id) or (None, -1)
    assert number == 1 and found is not None
    assert (found.kind, found.status, found.cancel_requested) == ("order", "RUNNING", False)
    assert (found.context.order.id, found.context.order.qty, found.context.title) == (saga.order_id, 2,
                                                                                       found.context.title)
    assert found.context.title and found.context.charge_ref is None
    assert _claim_at_once(pg, saga.id) == (found, None)  # a repeated message takes nothing
    with pg.reading() as conn:
        pay = repo.load_saga(conn, saga.id)
    assert pay is not None and (pay.steps["pay"].status, pay.steps["pay"].attempts) == ("RUNNING", 1)
    with pg.reading() as conn:
        task, sent = conn.execute(sa.text("SELECT task_id, dispatched_at FROM saga_steps WHERE saga_id = :s AND "
                                          "name = 'pay'"), {"s": saga.id}).one()
    assert (task, sent) == ("task-1", None)


@pytest.mark.parametrize("holder_does", ["claims the step", "starts compensating"])
def test_the_one_statement_claim_that_waited_for_the_lock_sees_what_the_holder_committed(
        pg: Database, holder_does: str) -> None:
    saga = new_saga(pg)
    claimed: list[tuple[repo.ClaimContext, int | None] | None] = []
    with pg.transaction() as holder:
        assert repo.lock_saga(holder, saga.id)
        waiter = threading.Thread(target=lambda: claimed.append(_claim_at_once(pg, saga.id)))
        waiter.start()
        time.sleep(0.3)  # the waiter's statement has started and waits for the saga lock
        if holder_does == "claims the step":
            assert repo.claim_step(holder, saga.id, "pay", utcnow(), 30, None) == 1
        else:
            holder.execute(sa.text("UPDATE sagas SET status = 'COMPENSATING' WHERE id = :s"), {"s": saga.id})
    waiter.join(10)
    assert claimed and claimed[0] is not None
    found, number = claimed[0]
    assert number is None
    assert found.status == ("RUNNING" if holder_does == "claims the step" else "COMPENSATING")
