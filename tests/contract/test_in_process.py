"""Schemathesis over the whole OpenAPI document, in process against the Flask app (SQLite, a recording publisher),
with the token of each role: every answer is checked by all of Schemathesis's checks."""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error

from api import views
from api.app import create_app
from tests.contract.config import config
from tests.contract.conftest import Counter
from tests.support import TEST_TOKENS, bearer
from tests.unit.fakes import make_runtime

RUN = "in process, each case sent with the storefront, support and viewer tokens"
ROLES = sorted(TEST_TOKENS)
MAX_EXAMPLES = 10  # per operation and phase: this run's share of CI stays under a minute
# Without a broker (a recording publisher stands in for it) the readiness probes answer their documented 503.
BROKERLESS_PROBES = {"GET /health", "GET /readyz"}

# Schemathesis reads the document when the module is collected, so the app is built here, on its own SQLite copy.
FOLDER = tempfile.TemporaryDirectory(prefix="bookmarket-contract-")
RUNTIME = make_runtime(Path(FOLDER.name))
schema = schemathesis.openapi.from_wsgi("/openapi.json", create_app(RUNTIME.settings, runtime=RUNTIME),
                                       config=config(MAX_EXAMPLES))


@pytest.fixture(scope="module", autouse=True)
def runtime_closed_at_the_end() -> Iterator[None]:
    yield
    RUNTIME.close()
    FOLDER.cleanup()


@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker settles payments here: `Prefer: wait=N` waits a tenth of a second at most, not N."""
    monkeypatch.setattr(views, "MAX_WAIT_S", 0.1)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # `counted` spans the inputs
def test_every_answer_matches_the_document_for_every_role(case: Case, counted: Counter) -> None:
    counted.cases += 1
    for role in ROLES:
        try:
            _call_and_validate(case, role)
        except Exception as failure:
            failure.add_note(f"with the {role} token")
            raise


def _call_and_validate(case: Case, role: str) -> None:
    """All checks; the readiness probes, whose broker is absent here by construction, answer their documented 503
    naming it (the HTTP run, on a real Redis, holds them to no 5xx as well)."""
    if case.operation.label not in BROKERLESS_PROBES:
        case.call_and_validate(headers=bearer(role))
        return
    response = case.call_and_validate(headers=bearer(role), excluded_checks=[not_a_server_error])
    if response.status_code >= 500:
        assert response.status_code == 503 and "broker" in response.text, response.text
