"""The integration stack: a migrated database (SQLite or PostgreSQL), real Redis, the sandbox server, a real
Celery worker process with the sweeper, and the API's Flask app on the same settings."""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import sqlalchemy as sa

from api.app import create_app
from infra.config import Settings
from infra.db import make_engine
from infra.migrate import upgrade
from tests.conftest import create_pg_database
from tests.support import (
    RABBITMQ_URL,
    TOKENS_SETTING,
    ProcessHandle,
    Sandbox,
    api_client,
    free_port,
    rabbitmq_vhost,
    start_sandbox,
    start_worker,
    wait_until,
)

# The brokers a stack can run on (build_stack's `broker`): the environment each adds.
BROKERS: dict[str, dict[str, str]] = {"redis": {}, "rabbitmq": {"BROKER_URL": RABBITMQ_URL}}
TERMINAL_SAGA = {"COMPLETED", "COMPENSATED", "FAILED"}
# Short backoff so spent retries take about a second; notify keeps room to see a provider come back.
FAST_RETRIES = {"*": {"base_s": 0.05, "cap_s": 0.2}, "notify": {"max_attempts": 8, "base_s": 0.2, "cap_s": 2}}


@dataclass
class Stack:
    backend: str
    env: dict[str, str]
    settings: Settings
    client: Any
    sandbox: Sandbox
    worker: ProcessHandle

    def post_order(self, customer_id: int = 1, book_id: int = 1, qty: int = 1, **headers: str) -> Any:
        return self.client.post("/orders", json={"customer_id": customer_id, "book_id": book_id, "qty": qty},
                                headers=headers)

    def order(self, order_id: int) -> dict[str, Any]:
        return self.client.get(f"/orders/{order_id}").get_json()

    def post_orders_without_broker(self, n: int, customer_id: int) -> list[dict[str, Any]]:
        """Post `n` orders while the broker cannot be reached: each is accepted (202) within 5 s and stays PENDING,
        its first step left in the outbox for the sweeper. The orders, as answered."""
        during, slowest = [], 0.0
        for _ in range(n):
            started = time.monotonic()
            response = self.post_order(customer_id=customer_id)
            slowest = max(slowest, time.monotonic() - started)
            assert response.status_code == 202, response.get_json()
            during.append(response.get_json())
        assert slowest < 5, f"a POST took {slowest:.1f}s while the broker was unreachable"
        assert all(self.order(o["id"])["status"] == "PENDING" for o in during)
        return during

    def saga(self, saga_id: int) -> dict[str, Any]:
        return self.client.get(f"/sagas/{saga_id}").get_json()

    def wait_saga(self, saga_id: int, timeout: float = 30) -> dict[str, Any]:
        """Poll the saga table (through the API) until the saga is terminal."""
        def done() -> dict[str, Any] | None:
            saga = self.saga(saga_id)
            return saga if saga["status"] in TERMINAL_SAGA else None

        try:
            return wait_until(done, timeout, 0.1, f"saga {saga_id} to end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nsaga: {self.saga(saga_id)}\nworker log:\n{self.worker.log_tail()}") from None

    def steps(self, saga: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in saga["steps"]}


def stack_env(database_url: str, sandbox_url: str, queue: str) -> dict[str, str]:
    return dict(
        os.environ,
        DATABASE_URL=database_url,
        REDIS_URL=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        SAGA_QUEUE=queue,
        SANDBOX_URL=sandbox_url,
        PAYMENT_URL=f"{sandbox_url}/payment",
        DELIVERY_URL=f"{sandbox_url}/delivery",
        MESSAGING_URL=f"{sandbox_url}/messaging",
        SWEEP_INTERVAL_S="0.5",
        PROVIDER_TIMEOUT_S="2",
        STEP_LEASE_S="10",
        STEP_POLICIES=json.dumps(FAST_RETRIES),
        BREAKER_FAIL_MAX="1000",  # breakers stay out of the way unless a module sets STACK_ENV
        BREAKER_RESET_S="2",
        REDISPATCH_AFTER_S="3",
        BOOKMARKET_TOKENS=TOKENS_SETTING,
    )


@contextmanager
def build_stack(tmp: Path, backend: str, admin_url: str, broker: str = "redis", **overrides: str) -> Iterator[Stack]:
    """Migrate a fresh database, start a sandbox and a worker (with the sweeper), and build the API on it.
    `broker`: "redis" (REDIS_URL, as by default) or "rabbitmq" (BROKER_URL=amqp on a vhost of its own, deleted
    afterwards, so parallel stacks never share a queue or a worker name); Redis keeps the breakers either way."""
    drop = None
    if backend == "sqlite":
        database_url = f"sqlite:///{tmp / 'bookmarket.db'}"
    else:
        database_url, drop = create_pg_database(admin_url)
    upgrade(database_url)
    sandbox = start_sandbox(free_port(), tmp)
    resources = contextlib.ExitStack()
    if broker == "rabbitmq" and "BROKER_URL" not in overrides:  # a vhost of its own (see rabbitmq_vhost)
        overrides = {**overrides, "BROKER_URL": resources.enter_context(rabbitmq_vhost())}
    env = {**stack_env(database_url, sandbox.url, f"saga-test-{uuid.uuid4().hex[:8]}"), **BROKERS[broker],
           **overrides}
    worker = start_worker(env, tmp / "worker.log")
    settings = Settings.from_env(env)
    app = create_app(settings)
    stack = Stack(backend, env, settings, api_client(app), Sandbox(sandbox.url), worker)
    try:
        yield stack
    finally:
        stack.worker.stop()  # the one running now: a test may have started another in its place
        sandbox.stop()
        app.extensions["bookmarket"].close()
        forget_queue(env["REDIS_URL"], env["SAGA_QUEUE"])
        if env.get("BROKER_URL"):
            delete_rabbitmq_queue(env["BROKER_URL"], env["SAGA_QUEUE"])
        resources.close()
        if drop:
            drop()


def delete_rabbitmq_queue(url: str, queue: str) -> None:
    """Delete a test's queue on RabbitMQ (the delayed-delivery exchanges Celery declares are shared and stay)."""
    from kombu import Connection

    with contextlib.suppress(Exception), Connection(url, connect_timeout=3) as conn:
        conn.default_channel.queue_delete(queue)
        conn.default_channel.exchange_delete(queue)


def forget_queue(redis_url: str, queue: str) -> None:
    """Remove a test queue's keys from the shared Redis: the queue, its bindings, its breakers' state, and kombu's
    records of its unacknowledged messages."""
    with contextlib.suppress(redis.RedisError, ValueError):  # ValueError: sentinel://, a test's own servers
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=1)
        for pattern in (queue, f"bookmarket:{queue}:*", f"_kombu.binding*.{queue}*"):
            keys = list(client.scan_iter(pattern))
            if keys:
                client.delete(*keys)
        _forget_unacked(client, queue)


def _forget_unacked(client: redis.Redis, queue: str) -> None:
    """Drop kombu's records of this queue's messages that a killed worker left unacknowledged (a shared hash)."""
    for tag, raw in client.hscan_iter("unacked"):
        with contextlib.suppress(ValueError, IndexError, TypeError):
            if json.loads(raw)[2] == queue:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postgres_server: str,
          redis_server: str) -> Iterator[Stack]:
    overrides = getattr(request.module, "STACK_ENV", {})
    tmp = tmp_path_factory.mktemp(f"stack-{request.param}")
    with build_stack(tmp, request.param, postgres_server, **overrides) as built:
        yield built


@pytest.fixture(scope="module")
def rabbitmq_stack(tmp_path_factory: pytest.TempPathFactory, postgres_server: str, redis_server: str,
                   rabbitmq_server: str) -> Iterator[Stack]:
    """The stack on PostgreSQL with RabbitMQ as the broker (the `stack` fixture runs every module on Redis)."""
    tmp = tmp_path_factory.mktemp("stack-rabbitmq")
    with build_stack(tmp, "postgresql", postgres_server, broker="rabbitmq") as built:
        yield built


@pytest.fixture
def rabbitmq_live(rabbitmq_stack: Stack) -> Stack:
    """The RabbitMQ stack with the sandbox reset to well-behaved providers."""
    rabbitmq_stack.sandbox.reset()
    return rabbitmq_stack


@pytest.fixture
def live(stack: Stack) -> Stack:
    """The stack with the sandbox reset to well-behaved providers."""
    stack.sandbox.reset()
    return stack


# Every table a test writes, emptied between the tests of a module that shares one migrated PostgreSQL database.
TABLES = ("audit_log, bulk_plans, step_attempts, notifications, customer_orders, payments, deliveries, saga_steps, "
          "sagas, orders, sagas_archive, saga_steps_archive, step_attempts_archive")


@pytest.fixture(scope="module")
def pg_url(postgres_server: str) -> Iterator[str]:
    """A migrated PostgreSQL database for the whole module (a unit module's tests run again on PostgreSQL)."""
    url, drop = create_pg_database(postgres_server)
    upgrade(url)
    yield url
    with contextlib.suppress(Exception):
        drop()


def emptied(url: str) -> None:
    """Empty every table of `url`'s database and restart its ids, for the next test."""
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    admin.dispose()


class ConnectionsByRole:
    """The most connections each application_name had at once on one database (`most`), and the most in all
    (`most_total`), sampled every 20 ms straight from pg_stat_activity while the block runs."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.admin_url, self.database = admin_url, database
        self.most: Counter[str] = Counter()
        self.most_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ConnectionsByRole:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            while not self._stop.wait(0.02):
                rows = conn.execute("SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s "
                                    "GROUP BY application_name", (self.database,)).fetchall()
                for name, n in rows:
                    self.most[name] = max(self.most[name], n)
                self.most_total = max(self.most_total, sum(n for _, n in rows))
