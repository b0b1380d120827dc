"""The step attempts contract (tests/unit/test_engine_attempts.py) on PostgreSQL, where the hot statements run
straight through psycopg and closing a step keeps its attempt in the same statement."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.migrate import upgrade
from tests.conftest import create_pg_database
from tests.unit.engine_fakes import Engine, engine_on
from tests.unit.fakes import runtime_for
from tests.unit.test_engine_attempts import StepAttemptsContract

pytestmark = pytest.mark.integration


class TestStepAttemptsOnPostgreSQL(StepAttemptsContract):
    @pytest.fixture
    def engine(self, postgres_server: str) -> Iterator[Engine]:
        url, drop = create_pg_database(postgres_server)
        upgrade(url)
        engine = engine_on(runtime_for(url))
        yield engine
        engine.rt.close()
        drop()
