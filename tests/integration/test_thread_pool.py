"""One worker process on Celery's thread pool carries many sagas while their provider calls wait: breakers that
never hold a lock across a call, and a bulkhead per provider so a hanging provider cannot take the others' threads."""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from api.app import create_app
from infra.config import Settings
from infra.db import make_engine
from infra.migrate import upgrade
from tests.conftest import create_pg_database
from tests.integration.conftest import forget_queue, stack_env
from tests.support import Sandbox, api_client, free_port, start_sandbox, start_worker, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def threaded(tmp_path: Path, postgres_server: str, redis_server: str) -> Iterator[tuple[Flask, Sandbox, str]]:
    """A PostgreSQL stack with one worker process started as `bookmarket worker` starts it, and the default
    bulkheads; provider calls may hang for 30 s before they time out."""
    url, drop = create_pg_database(postgres_server)
    upgrade(url)
    sandbox = start_sandbox(free_port(), tmp_path)
    env = {**stack_env(url, sandbox.url, f"saga-threads-{uuid.uuid4().hex[:8]}"),
           "PROVIDER_TIMEOUT_S": "30", "STEP_LEASE_S": "60", "WORKER_SHUTDOWN_GRACE_S": "1"}
    for name in ("BULKHEAD_MAX_CALLS", "BREAKER_FAIL_MAX"):
        env.pop(name, None)  # the product's defaults
    worker = start_worker(env, tmp_path / "worker.log")
    app = create_app(Settings.from_env(env))
    try:
        yield app, Sandbox(sandbox.url), url
    finally:
        worker.stop()
        sandbox.stop()
        app.extensions["bookmarket"].close()
        forget_queue(env["REDIS_URL"], env["SAGA_QUEUE"])
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


def post_orders(app: Flask, customer_id: int, n: int) -> set[int]:
    """n orders posted from 8 client threads at once; their ids."""
    def one(_: int) -> int:
        response = api_client(app).post("/orders", json={"customer_id": customer_id, "book_id": 1, "qty": 1})
        assert response.status_code == 202, response.get_data(as_text=True)
        return int(response.get_json()["id"])

    with ThreadPoolExecutor(8) as pool:
        return set(pool.map(one, range(n)))


def charges_at_once(sandbox: Sandbox, ids: set[int], call_s: float) -> int:
    wait_until(lambda: len([e for e in sandbox.ledger("payment", kind="charge") if e["order_id"] in ids]) == len(ids),
               30, 0.2, f"the {len(ids)} charges")
    charges = [e for e in sandbox.ledger("payment", kind="charge") if e["order_id"] in ids]
    return most_at_once([datetime.fromisoformat(e["created_at"]) for e in charges], call_s)


def test_one_worker_process_holds_many_payment_calls_at_once_and_a_hanging_messenger_does_not_lower_them(
        threaded: tuple[Flask, Sandbox, str]) -> None:
    app, sandbox, url = threaded
    cap = Settings.from_env({}).bulkhead_max_calls["messaging"]
    sandbox.behave("payment", latency_ms=[1000, 1000])
    before = charges_at_once(sandbox, post_orders(app, 1, 40), 1.0)

    sandbox.behave("messaging", latency_ms=[60000, 60000])  # hangs for the rest of the test
    post_orders(app, 3, cap + 12)  # their notify calls fill messaging's slots, the rest wait for one
    wait_until(lambda: count(url, "notify", "RUNNING") >= cap and count(url, "notify", "WAITING") > 0, 30, 0.1,
               f"{cap} notify calls to hang and the rest to wait for the bulkhead")
    during = charges_at_once(sandbox, post_orders(app, 2, 40), 1.0)

    assert before >= 20 and during >= 20, (before, during)
    assert during >= before - 2, (before, during)  # two calls of slack for when the client threads got the CPU
    print(f"payment calls in flight at once: {before} before messaging hung, {during} while it hung")
