"""The input bounds (tests/unit/test_input_bounds.py) again on PostgreSQL, which refuses what SQLite stores: a
NUL or a lone surrogate that got through to it would be a 500; here each is a 422 naming its field, and the text
PostgreSQL can hold (line breaks, tabs, any script) comes back as it was sent."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.runtime import Runtime
from tests.integration.conftest import emptied
from tests.unit.fakes import runtime_for
from tests.unit.test_input_bounds import *  # noqa: F403 - every bounds test, with this module's `runtime` fixture

pytestmark = pytest.mark.integration

@pytest.fixture
def runtime(pg_url: str) -> Iterator[Runtime]:
    emptied(pg_url)
    rt = runtime_for(pg_url)
    yield rt
    rt.close()


def test_the_runtime_is_on_postgresql(runtime: Runtime) -> None:
    assert runtime.db.engine.dialect.name == "postgresql"
