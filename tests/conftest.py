"""Shared fixtures: real PostgreSQL, real Redis, a real sandbox server and real Celery worker processes.

PostgreSQL and Redis come from TEST_POSTGRES_URL and TEST_REDIS_URL (defaults: the machine's services). When they
cannot be reached the tests fail with a clear message; they never skip.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from tests.support import (
    PG_ADMIN_URL,
    RABBITMQ_URL,
    REDIS_BASE_URL,
    ProcessHandle,
    free_port,
    start_sandbox,
)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable PostgreSQL, or a loud failure."""
    try:
        engine = sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL is required at {PG_ADMIN_URL} (set TEST_POSTGRES_URL): {exc}", pytrace=False)
    return PG_ADMIN_URL


@pytest.fixture(scope="session")
def redis_server() -> str:
    try:
        redis.Redis.from_url(REDIS_BASE_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Redis is required at {REDIS_BASE_URL} (set TEST_REDIS_URL): {exc}", pytrace=False)
    return REDIS_BASE_URL


@pytest.fixture(scope="session")
def rabbitmq_server() -> str:
    """The URL of a reachable RabbitMQ, or a loud failure."""
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"RabbitMQ is required at {RABBITMQ_URL} (set TEST_RABBITMQ_URL): {exc}", pytrace=False)
    return RABBITMQ_URL


def create_pg_database(admin_url: str) -> tuple[str, callable]:  # type: ignore[valid-type]
    """A fresh PostgreSQL database for this test session, and a function that drops it."""
    name = f"bm_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture(scope="session")
def sandbox() -> Iterator[ProcessHandle]:
    """One sandbox providers server for unit-level service tests."""
    handle = start_sandbox(free_port())
    yield handle
    handle.stop()
