"""The statements whose cost must follow the sagas in flight, not the history: on PostgreSQL filled with 20,000
finished orders (`bookmarket history fill`) and a few sagas in flight, each statement as the code runs it (the real
function is called and its SQL captured) is EXPLAINed and must read the intended index, never scan sagas, saga_steps
or step_attempts whole. Dropping an index (in a transaction rolled back) turns the same check red."""
from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from infra import repository as repo
from infra.db import make_engine
from infra.history import fill
from infra.migrate import upgrade
from infra.tables import metadata
from services import saga_search
from services.saga_search import SagaFilter
from tests.conftest import create_pg_database

pytestmark = pytest.mark.integration

HISTORY = 20_000
BIG_TABLES = {"sagas", "saga_steps", "step_attempts"}
NOW = datetime.now(UTC)
# the query KEDA's postgresql trigger runs on every poll when the chart's stepsInFlight is enabled
KEDA_QUERY = re.search(r'query: "(.*)"', (Path(__file__).resolve().parents[2] / "helm/bookmarket/templates/"
                                          "worker-autoscaler.yaml").read_text()).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def filled(postgres_server: str) -> Iterator[sa.Engine]:
    """A migrated database with a history of finished orders and, like a live system, a few sagas in flight."""
    url, drop = create_pg_database(postgres_server)
    upgrade(url)
    fill(url, HISTORY, batch=5_000)
    engine = make_engine(url)
    with engine.begin() as conn:  # after the fill's ANALYZE, as on a live system: the statistics see no step open
        _add_in_flight(conn)
    yield engine
    engine.dispose()
    with contextlib.suppress(Exception):
        drop()


def _add_in_flight(conn: Connection) -> None:
    """300 sagas of the history made live again, as orders just placed: the first step sent (some running, some past
    their lease, some waiting for their provider), the later ones PENDING and not yet due."""
    ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM sagas ORDER BY id DESC LIMIT 300")]
    conn.execute(sa.text("UPDATE sagas SET status = 'RUNNING', finished_at = NULL WHERE id = ANY(:ids)"), {"ids": ids})
    conn.execute(sa.text("UPDATE saga_steps SET status = 'PENDING', available_at = NULL, dispatched_at = NULL, "
                         "finished_at = NULL WHERE saga_id = ANY(:ids)"), {"ids": ids})
    for n, saga_id in enumerate(ids):
        status = ("PENDING", "PENDING", "RUNNING", "WAITING")[n % 4]
        conn.execute(sa.text("UPDATE saga_steps SET status = :s, lease_until = :lease, available_at = :due, "
                             "dispatched_at = :due WHERE saga_id = :id AND name = 'pay'"),
                     {"s": status, "id": saga_id, "lease": NOW - timedelta(seconds=n % 10 - 5), "due": NOW})


def captured(engine: sa.Engine, call: Callable[[Connection], Any]) -> list[tuple[str, Any]]:
    """The SELECTs `call` runs (their SQL and parameters), in a transaction rolled back."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as conn, conn.begin() as tx:
            call(conn)
            tx.rollback()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert seen, "the call ran no SELECT"
    return seen


def plan_nodes(conn: Connection, statement: str, parameters: Any) -> list[dict[str, Any]]:
    """Every node of the statement's plan, flattened."""
    raw = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar_one()
    nodes, todo = [], [(json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo += node.get("Plans", [])
    return nodes


def assert_reads(conn: Connection, statements: list[tuple[str, Any]], *indexes: str) -> None:
    """Together the statements read every index in `indexes`, and none scans a big table whole."""
    used, scanned = set(), set()
    for statement, parameters in statements:
        for node in plan_nodes(conn, statement, parameters):
            if "Index Name" in node:
                used.add(node["Index Name"])
            if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in BIG_TABLES:
                scanned.add(node["Relation Name"])
    assert not scanned, f"sequential scan of {sorted(scanned)} in {statements}"
    missing = set(indexes) - used
    assert not missing, f"index {sorted(missing)} not used (used {sorted(used)}) by {statements}"


def _search(conn: Connection, f: SagaFilter) -> None:
    rt = SimpleNamespace(db=SimpleNamespace(reading=lambda: contextlib.nullcontext(conn)))
    saga_search.search(rt, f, 0, 20)  # type: ignore[arg-type]


# (what, the real call, the indexes its statements must read)
QUERIES: list[tuple[str, Callable[[Connection], Any], tuple[str, ...]]] = [
    ("sweeper: expired leases", lambda c: repo.expired_leases(c, NOW, 500), ("ix_saga_steps_running_lease",)),
    ("sweeper: due dispatches", lambda c: repo.due_dispatches(c, NOW, NOW - timedelta(seconds=30), 500),
     ("ix_saga_steps_open_due",)),
    ("sweeper: forget keys", lambda c: repo.forget_idempotency_keys(c, NOW - timedelta(days=1), 500),
     ("ix_orders_idempotency_kept",)),
    ("metrics: sagas by status", lambda c: repo.count_sagas_by_status(c, ("RUNNING", "COMPENSATING", "FAILED")),
     ("ix_sagas_active",)),
    ("metrics: waiting", lambda c: repo.count_waiting_sagas(c, 100_000), ("ix_saga_steps_open_due",)),
    ("metrics: stuck", lambda c: repo.count_stuck_steps(c, NOW, NOW - timedelta(seconds=60), 100_000),
     ("ix_saga_steps_running_lease", "ix_saga_steps_open_due")),
    ("admission: payments in flight", lambda c: repo.count_open_steps(c, "pay", 1000),
     ("ix_saga_steps_name_status",)),
    ("search: by status", lambda c: _search(c, SagaFilter(statuses=("FAILED",))), ("ix_sagas_status_id",)),
    ("search: by failing step", lambda c: _search(c, SagaFilter(failing_step="cancel_payment")),
     ("ix_saga_steps_failed_by_name",)),
    ("customer's orders", lambda c: repo.customer_order_page(c, 7, 0, 20), ("ix_customer_orders_customer_created",)),
    ("chart: KEDA steps in flight", lambda c: c.exec_driver_sql(KEDA_QUERY).scalar_one(),
     ("ix_saga_steps_running_lease", "ix_saga_steps_open_due")),
]


@pytest.mark.parametrize(("what", "call", "indexes"), QUERIES, ids=[q[0] for q in QUERIES])
def test_the_statement_reads_its_index_and_never_a_whole_big_table(
    filled: sa.Engine, what: str, call: Callable[[Connection], Any], indexes: tuple[str, ...],
) -> None:
    statements = captured(filled, call)
    with filled.connect() as conn:
        assert_reads(conn, statements, *indexes)


@pytest.mark.parametrize(("what", "index"), [("sweeper: expired leases", "ix_saga_steps_running_lease"),
                                             ("sweeper: due dispatches", "ix_saga_steps_open_due"),
                                             ("metrics: sagas by status", "ix_sagas_active"),
                                             ("search: by failing step", "ix_saga_steps_failed_by_name")])
def test_without_its_index_the_same_check_fails(filled: sa.Engine, what: str, index: str) -> None:
    call, indexes = next((q[1], q[2]) for q in QUERIES if q[0] == what)
    statements = captured(filled, call)
    with filled.connect() as conn, conn.begin() as tx:
        conn.exec_driver_sql(f"DROP INDEX {index}")
        with pytest.raises(AssertionError):
            assert_reads(conn, statements, *indexes)
        tx.rollback()
    with filled.connect() as conn:  # the index is back
        assert_reads(conn, statements, *indexes)


def test_the_migrations_create_the_declared_partial_indexes_on_postgresql(filled: sa.Engine) -> None:
    with filled.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        predicates = dict(conn.exec_driver_sql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('sagas', 'saga_steps')").all())
    assert "WHERE" in predicates["ix_sagas_active"] and "WHERE" in predicates["ix_saga_steps_open_due"]
    assert "WHERE" not in predicates["ix_sagas_status_id"]
