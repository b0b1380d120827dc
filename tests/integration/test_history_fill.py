"""`bookmarket history fill` on PostgreSQL: the orders it adds read back through the API like orders the engine
finished (the order, the customer's page, the support search and timeline), the engine loads their sagas, and an
order placed afterwards takes the next ids (the sequences were moved past the fill). SQLite is refused."""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from api.app import create_app
from cli.main import main
from infra import repository as repo
from infra.config import Settings
from infra.db import make_engine
from infra.migrate import upgrade
from saga.orchestrator import SagaStatus
from tests.conftest import create_pg_database
from tests.integration.conftest import forget_queue, stack_env
from tests.support import api_client

pytestmark = pytest.mark.integration

ORDERS = 3_000


@pytest.fixture(scope="module")
def filled(postgres_server: str, redis_server: str) -> Iterator[tuple[Any, sa.Engine]]:
    """A database with one order the engine placed, then the fill through the command line, and the API on it."""
    url, drop = create_pg_database(postgres_server)
    upgrade(url)
    env = stack_env(url, "http://127.0.0.1:9", f"saga-test-{uuid.uuid4().hex[:8]}")
    app = create_app(Settings.from_env(env))
    client = api_client(app)
    assert client.post("/orders", json={"customer_id": 1, "book_id": 1, "qty": 1}).status_code == 202
    assert main(["history", "fill", "--orders", str(ORDERS), "--customers", "50", "--database-url", url,
                 "--batch", "1000", "--failed-share", "0.02"]) == 0
    engine = make_engine(url)
    yield app, engine
    engine.dispose()
    app.extensions["bookmarket"].close()
    forget_queue(env["REDIS_URL"], env["SAGA_QUEUE"])
    with contextlib.suppress(Exception):
        drop()


def one(engine: sa.Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.exec_driver_sql(sql).first()


def test_the_fill_writes_every_row_a_finished_order_leaves(filled: tuple[Any, sa.Engine]) -> None:
    _, engine = filled
    counts = one(engine, "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM sagas), "
                         "(SELECT count(*) FROM customer_orders), (SELECT count(*) FROM payments), "
                         "(SELECT count(*) FROM saga_steps WHERE saga_id > 1), "
                         "(SELECT count(DISTINCT saga_id) FROM step_attempts), "
                         "(SELECT count(*) FROM sagas WHERE recoveries > 0)")
    orders, sagas, customer_orders, payments, steps, attempted, lost = counts
    assert (orders, sagas, customer_orders) == (ORDERS + 1, ORDERS + 1, ORDERS + 1)
    # a payment whose workers were lost every time never got an answer: no payment row
    assert payments == ORDERS - lost and attempted == ORDERS and steps >= 5 * ORDERS
    statuses = dict(engine.connect().exec_driver_sql("SELECT status, count(*) FROM sagas GROUP BY status").all())
    assert statuses["COMPLETED"] > 0.8 * ORDERS and statuses["COMPENSATED"] > 0 and statuses["FAILED"] > 0


def test_a_filled_order_reads_back_through_the_api(filled: tuple[Any, sa.Engine]) -> None:
    app, engine = filled
    order_id, saga_id, customer_id = one(engine, "SELECT o.id, s.id, o.customer_id FROM orders o JOIN sagas s ON "
                                                 "s.order_id = o.id WHERE s.status = 'COMPLETED' AND o.id > 1 LIMIT 1")
    order = api_client(app).get(f"/orders/{order_id}")
    assert order.status_code == 200 and order.get_json()["status"] == "SHIPPED"
    saga = api_client(app).get(f"/sagas/{saga_id}").get_json()
    assert [(s["name"], s["status"]) for s in saga["steps"]] == [
        ("pay", "SUCCEEDED"), ("confirm", "SUCCEEDED"), ("ship", "SUCCEEDED"), ("mark_shipped", "SUCCEEDED"),
        ("notify", "SUCCEEDED")]
    page = api_client(app).get(f"/customers/{customer_id}/orders?page_size=100")
    mine = one(engine, f"SELECT count(*) FROM orders WHERE customer_id = {customer_id}")[0]
    ids = [o["order_id"] if "order_id" in o else o["id"] for o in page.get_json()]
    assert len(ids) == mine and ids == sorted(ids, reverse=True) and order_id in ids


def test_support_finds_parked_filled_sagas_and_their_timeline(filled: tuple[Any, sa.Engine]) -> None:
    app, engine = filled
    support = api_client(app, "support")
    parked = support.get("/admin/sagas?status=FAILED&page_size=100").get_json()
    assert parked and all(s["status"] == "FAILED" and s["failing_step"] in ("pay", "cancel_payment") for s in parked)
    refunds = support.get("/admin/sagas?failing_step=cancel_payment&page_size=100").get_json()
    expected = one(engine, "SELECT count(*) FROM saga_steps WHERE name = 'cancel_payment' AND status = 'FAILED'")[0]
    assert len(refunds) == expected > 0 and all(s["failing_step"] == "cancel_payment" for s in refunds)
    view = support.get(f"/admin/sagas/{refunds[0]['id']}").get_json()
    steps = {s["name"]: s for s in view["steps"]}
    assert len(steps["cancel_payment"]["attempt_history"]) == 8 and steps["ship"]["status"] == "FAILED"
    assert view["actions"]  # support can act on it: the engine reads the filled saga like its own
    with engine.connect() as conn:
        saga = repo.load_saga(conn, refunds[0]["id"])
    assert saga is not None and saga.status is SagaStatus.FAILED and saga.steps["cancel_payment"].attempts == 8


def test_an_order_placed_after_the_fill_takes_the_next_ids(filled: tuple[Any, sa.Engine]) -> None:
    app, engine = filled
    top_order, top_saga = one(engine, "SELECT max(id), (SELECT max(id) FROM sagas) FROM orders")
    placed = api_client(app).post("/orders", json={"customer_id": 3, "book_id": 2, "qty": 1})
    assert placed.status_code == 202, placed.get_data(as_text=True)
    body = placed.get_json()
    assert body["id"] == top_order + 1 and body["saga_id"] == top_saga + 1


def test_the_fill_refuses_sqlite_and_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "fill", "--orders", "10", "--database-url", "sqlite:///nowhere.db"]) == 2
    assert "needs PostgreSQL" in capsys.readouterr().err
    pg = "postgresql+psycopg://postgres@127.0.0.1:5432/nowhere"
    assert main(["history", "fill", "--orders", "10", "--failed-share", "2", "--database-url", pg]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
