"""Retention on PostgreSQL: the unit contract again (tests/unit/test_retention.py), and what only PostgreSQL shows:
a saga another transaction holds is skipped, never waited for; two runners never take the same sagas; a scheduled
pass gives way to one already running; and a real worker runs the scheduled pass (beat's `saga.retention`, and the
sweeper loop)."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli.main import celery_worker
from infra import retention as store
from infra.db import make_engine
from infra.tables import sagas, sagas_archive
from services import retention
from tests.integration.conftest import emptied, stack_env
from tests.support import ProcessHandle, spawn, wait_until
from tests.unit.engine_fakes import Engine, engine_on
from tests.unit.fakes import runtime_for
from tests.unit.test_retention import *  # noqa: F403 - every retention test, with this module's `engine` fixture
from tests.unit.test_retention import DAY, ids, run

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:  # noqa: F811 - this module's engine is on PostgreSQL
    emptied(pg_url)
    rt = runtime_for(pg_url)
    yield engine_on(rt)
    rt.close()


def test_sqlite_keeps_the_newest_saga_so_no_saga_id_is_given_twice(engine: Engine) -> None:  # noqa: F811
    """On PostgreSQL the newest saga may go too: ids come from a sequence and are never given twice."""
    first = engine.play().saga_id
    engine.clock.advance(31 * DAY)

    assert run(engine).sagas == 1 and ids(engine, sagas) == set()
    assert engine.place().saga_id == first + 1


def old_sagas(engine: Engine, count: int) -> set[int]:
    made = {engine.play().saga_id for _ in range(count)}
    engine.clock.advance(31 * DAY)
    return made


def test_a_saga_another_transaction_holds_is_skipped_not_waited_for(engine: Engine, pg_url: str) -> None:
    made = old_sagas(engine, 4)
    held = min(made)
    other = make_engine(pg_url)
    done: list[retention.Report] = []
    try:
        with other.begin() as conn:  # a support action or a late worker holds this saga's row
            conn.execute(sa.select(sagas.c.id).where(sagas.c.id == held).with_for_update())
            runner = threading.Thread(target=lambda: done.append(run(engine, batch=2)))
            runner.start()
            runner.join(60)  # a bound for a hang, not a timing: the run must end while the lock is held
            assert not runner.is_alive() and done[0].sagas == 3
            assert ids(engine, sagas) == {held}
        assert run(engine).sagas == 1 and ids(engine, sagas_archive) == made  # once released, it goes
    finally:
        other.dispose()


def test_two_runners_never_take_the_same_sagas(engine: Engine, pg_url: str) -> None:
    made = old_sagas(engine, 12)
    other = make_engine(pg_url)
    try:
        with other.begin() as conn:  # runner A has picked its batch and not committed yet
            picked = store.pick_old(conn, engine.clock() - timedelta(days=30), 5)
            assert len(picked) == 5
            b = run(engine, batch=3)  # runner B meanwhile
            assert b.sagas == 7 and not set(picked) & ids(engine, sagas_archive)
            moved = store.move(conn, picked, keep_steps=True, now=engine.clock())
        assert moved.sagas == 5 and ids(engine, sagas_archive) == made and ids(engine, sagas) == set()
    finally:
        other.dispose()


def test_two_runners_at_once_move_each_saga_once(engine: Engine) -> None:
    made = old_sagas(engine, 30)
    start = threading.Barrier(2)
    reports: list[retention.Report] = []
    errors: list[BaseException] = []

    def runner() -> None:
        start.wait()
        try:
            reports.append(run(engine, batch=2))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(reports) == 2
    assert sum(r.sagas for r in reports) == 30 and ids(engine, sagas_archive) == made


def test_a_batch_that_would_wait_on_a_lock_gives_up_after_the_lock_timeout(
        engine: Engine, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step row held without its saga (nothing in the engine does that, but a hand-written UPDATE might): the
    batch waits LOCK_TIMEOUT, is rolled back and tried again, and the run stops with the error, moving nothing."""
    made = old_sagas(engine, 2)
    monkeypatch.setattr(retention, "LOCK_TIMEOUT", "50ms")
    other = make_engine(pg_url)
    try:
        with other.begin() as conn:
            conn.execute(sa.text("SELECT 1 FROM saga_steps WHERE saga_id = :id FOR UPDATE"), {"id": min(made)})
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                run(engine)
            assert ids(engine, sagas) == made and ids(engine, sagas_archive) == set()
        assert run(engine).sagas == 2
    finally:
        other.dispose()


def test_a_scheduled_pass_gives_way_to_one_already_running(engine: Engine, pg_url: str) -> None:
    old_sagas(engine, 2)
    other = make_engine(pg_url)
    try:
        with other.begin() as conn:
            assert conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(retention.PASS_LOCK))).scalar()
            busy = retention.retention_pass(engine.rt.db, 30, 10, "archive", 5, engine.clock)
            assert busy.busy and busy.sagas == 0
            assert run(engine).sagas == 2  # an operator's run does not take the pass lock
    finally:
        other.dispose()


def test_the_schedule_runs_retention_in_a_real_worker(engine: Engine, pg_url: str, tmp_path: Path) -> None:
    """Beat's `saga.retention` (SWEEP_IN_WORKER=0: only beat), then the sweeper loop (no beat)."""
    engine.clock.now = datetime.now(UTC) - timedelta(days=60)  # the worker reads the real time
    first = {engine.play().saga_id for _ in range(3)}
    engine.clock.now = datetime.now(UTC) - timedelta(days=45)
    second = {engine.play().saga_id for _ in range(3)}
    engine.clock.now = datetime.now(UTC)
    newest = engine.play().saga_id
    env = stack_env(pg_url, "http://127.0.0.1:9", f"retention-{uuid.uuid4().hex[:8]}")
    env.update(RETENTION_INTERVAL_S="0.5", RETENTION_BATCH="2", RETENTION_MAX_BATCHES="1")

    with worker(dict(env, RETENTION_DAYS="50", SWEEP_IN_WORKER="0"), tmp_path / "beat", beat=True) as beat:
        wait_until(lambda: ids(engine, sagas_archive) == first, 60, 0.2, "beat's retention to move the 60-day-old")
        assert "saga.retention" in beat.log_tail(500) and "retention: moved" in beat.log_tail(500)
    with worker(dict(env, RETENTION_DAYS="30"), tmp_path / "loop", beat=False) as loop:
        wait_until(lambda: ids(engine, sagas_archive) == first | second, 60, 0.2, "the loop to move the 45-day-old")
        moved = [line for line in loop.log_tail(500).splitlines() if "retention: moved" in line]
        assert moved and all('"thread": "bookmarket-sweeper"' in line for line in moved)  # the loop, not a task
    assert ids(engine, sagas) == {newest}


class worker:  # noqa: N801 - used as a context manager
    def __init__(self, env: dict[str, str], folder: Path, beat: bool) -> None:
        folder.mkdir()
        log = folder / "worker.log"
        argv = celery_worker(4, env["SAGA_QUEUE"], str(folder / "schedule") if beat else None, "ret@%h")
        self.handle = ProcessHandle(spawn(argv, env, log), log=log)

    def __enter__(self) -> ProcessHandle:
        return self.handle

    def __exit__(self, *exc: object) -> None:
        self.handle.stop()
