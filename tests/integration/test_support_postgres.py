"""The support actions' tests (tests/unit/test_support.py) again on PostgreSQL, and what only PostgreSQL shows:
two actions on one saga at once (the second is refused), and an action that waits for a worker holding the saga."""
from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from infra.db import make_engine
from services.support import ACTION_LOCK_SPACE, ActionInProgress
from tests.integration.conftest import emptied
from tests.unit.engine_fakes import Engine, engine_on
from tests.unit.fakes import runtime_for
from tests.unit.test_support import *  # noqa: F403 - every support test, with this module's `engine` fixture
from tests.unit.test_support import act, audit, parked_on_pay

pytestmark = pytest.mark.integration

@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:  # noqa: F811 - this module's engine is on PostgreSQL
    emptied(pg_url)
    rt = runtime_for(pg_url)
    yield engine_on(rt)
    rt.close()


def test_a_second_action_while_one_holds_the_saga_is_refused_at_once(engine: Engine, pg_url: str) -> None:
    saga_id = parked_on_pay(engine)
    other = make_engine(pg_url)
    try:
        with other.begin() as conn:  # an action in progress on this saga, in another process
            assert conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(ACTION_LOCK_SPACE, saga_id))).scalar()
            with pytest.raises(ActionInProgress, match="another support action"):
                act(engine, saga_id, "retry")
        act(engine, saga_id, "retry")  # once it is done
    finally:
        other.dispose()
    assert sorted(e["outcome"] for e in audit(engine, saga_id)) == ["done", "refused"]


def test_an_action_waits_for_a_worker_holding_the_saga_and_sees_its_change(engine: Engine, pg_url: str) -> None:
    """A worker's transaction holds the saga row (recording a step): the action waits for it, then acts on
    what the worker left, not on what it read before."""
    saga_id = parked_on_pay(engine)
    other = make_engine(pg_url)
    results: list[object] = []
    try:
        with other.begin() as conn:
            conn.execute(sa.text("SELECT id FROM sagas WHERE id = :id FOR UPDATE"), {"id": saga_id})
            worker = threading.Thread(target=lambda: results.append(_try(engine, saga_id)))
            worker.start()
            worker.join(0.5)
            assert worker.is_alive()  # waiting for the row
            conn.execute(sa.text("UPDATE sagas SET status = 'RUNNING' WHERE id = :id"), {"id": saga_id})
        worker.join(10)
    finally:
        other.dispose()
    assert len(results) == 1 and "still running" in str(results[0])


def _try(engine: Engine, saga_id: int) -> object:
    try:
        return act(engine, saga_id, "retry")
    except Exception as exc:  # noqa: BLE001 - the refusal is the result
        return exc
