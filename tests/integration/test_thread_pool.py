"""One worker process on Celery's thread pool carries many sagas while their provider calls wait: breakers that
never hold a lock across a call, and a bulkhead per provider so a hanging provider cannot take the others' threads."""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from api.app import create_app
from infra.config import Settings
from infra.db import make_engine
from infra.migrate import upgrade
from tests.conftest import create_pg_database
from tests.integration.conftest import stack_env
from tests.support import Sandbox, free_port, start_sandbox, start_worker, wait_until

pytestmark = pytest.mark.integration
THREADS = 32


@pytest.fixture
def threaded(tmp_path: Path, postgres_server: str, redis_server: str) -> Iterator[tuple[object, Sandbox, str]]:
    """A PostgreSQL stack whose one worker process runs THREADS threads, breakers on, messaging capped at 4."""
    url, drop = create_pg_database(postgres_server)
    upgrade(url)
    sandbox = start_sandbox(free_port(), tmp_path)
    env = {**stack_env(url, sandbox.url, f"saga-threads-{uuid.uuid4().hex[:8]}"),
           "BREAKER_FAIL_MAX": "5", "BULKHEAD_MAX_CALLS": '{"messaging": 4}', "PROVIDER_TIMEOUT_S": "30",
           "STEP_LEASE_S": "60"}
    worker = start_worker(env, tmp_path / "worker.log", concurrency=THREADS, pool="threads")
    app = create_app(Settings.from_env(env))
    try:
        yield app.test_client(), Sandbox(sandbox.url), url
    finally:
        worker.stop()
        sandbox.stop()
        app.extensions["bookmarket"].close()
        with contextlib.suppress(Exception):
            drop()


def count(url: str, step: str, status: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM saga_steps WHERE name = :n AND status = :s"),
                                    {"n": step, "s": status}).scalar_one())
    finally:
        engine.dispose()


def most_at_once(finished: list[datetime], call_s: float) -> int:
    """The most calls the provider held at one instant, from when each call of call_s seconds was answered: calls
    answered less than call_s apart were all in flight together."""
    finished = sorted(finished)
    return max((sum(1 for t in finished[i:] if (t - start).total_seconds() < call_s)
                for i, start in enumerate(finished)), default=0)


def test_one_worker_process_holds_many_payment_calls_at_once_while_a_hanging_messenger_takes_only_its_cap(
        threaded: tuple[object, Sandbox, str]) -> None:
    client, sandbox, url = threaded
    sandbox.behave("messaging", latency_ms=[60000, 60000])  # hangs for the whole test
    for _ in range(20):  # without a cap, their notify calls would hang on 20 of the 32 threads
        assert client.post("/orders", json={"customer_id": 1, "book_id": 1, "qty": 1}).status_code == 202
    wait_until(lambda: count(url, "notify", "WAITING") > 0 and count(url, "notify", "RUNNING") >= 4, 30, 0.1,
               "four notify calls to hang and the rest to wait for the bulkhead")

    sandbox.behave("payment", latency_ms=[3000, 3000])
    orders = [client.post("/orders", json={"customer_id": 2, "book_id": 1, "qty": 1}).get_json() for _ in range(40)]
    ids = {o["id"] for o in orders}
    wait_until(lambda: len([e for e in sandbox.ledger("payment", kind="charge") if e["order_id"] in ids]) == 40,
               30, 0.2, "the 40 charges")

    charges = [e for e in sandbox.ledger("payment", kind="charge") if e["order_id"] in ids]
    assert most_at_once([datetime.fromisoformat(e["created_at"]) for e in charges], 3.0) >= 20
