"""The input bounds (tests/unit/test_input_bounds.py) again on PostgreSQL, which refuses what SQLite stores: a
NUL or a lone surrogate that got through to it would be a 500; here each is a 422 naming its field, and the text
PostgreSQL can hold (line breaks, tabs, any script) comes back as it was sent."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from infra import migrate
from infra.db import make_engine
from services.runtime import Runtime
from tests.conftest import create_pg_database
from tests.unit.fakes import runtime_for
from tests.unit.test_input_bounds import *  # noqa: F403 - every bounds test, with this module's `runtime` fixture

pytestmark = pytest.mark.integration

TABLES = ("audit_log, bulk_plans, step_attempts, notifications, customer_orders, payments, deliveries, saga_steps, "
          "sagas, orders")


@pytest.fixture(scope="module")
def pg_url(postgres_server: str) -> Iterator[str]:
    url, drop = create_pg_database(postgres_server)
    migrate.upgrade(url)
    yield url
    with contextlib.suppress(Exception):
        drop()


@pytest.fixture
def runtime(pg_url: str) -> Iterator[Runtime]:
    admin = make_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    admin.dispose()
    rt = runtime_for(pg_url)
    yield rt
    rt.close()


def test_the_runtime_is_on_postgresql(runtime: Runtime) -> None:
    assert runtime.db.engine.dialect.name == "postgresql"
