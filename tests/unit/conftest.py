"""Fixtures of the fast tier."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.runtime import Runtime
from tests.unit.fakes import make_runtime


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    """A Runtime on a migrated, seeded SQLite copy with a recording publisher."""
    rt = make_runtime(tmp_path)
    yield rt
    rt.close()
