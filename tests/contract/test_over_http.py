"""Schemathesis over the whole OpenAPI document once more, over HTTP: the API under gunicorn on a free port, on a
fresh PostgreSQL database and the real Redis, so the answers are the ones production gives (the readiness probes
included: both dependencies are there, so no 5xx at all)."""
from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case

from cli.main import gunicorn_api
from infra.migrate import upgrade
from tests.conftest import create_pg_database
from tests.contract.config import config, document
from tests.contract.conftest import Counter
from tests.integration.conftest import forget_queue
from tests.support import REDIS_BASE_URL, TOKENS_SETTING, ProcessHandle, bearer, free_port, spawn, wait_http

pytestmark = pytest.mark.integration
RUN = "over HTTP, gunicorn on PostgreSQL and Redis, the support token"
MAX_EXAMPLES = 6  # per operation and phase: this run's share of CI stays under a minute and a half
NOWHERE = "http://127.0.0.1:9"  # no provider is called: no worker runs, orders stay PENDING
MAX_WAIT = 1  # `Prefer: wait=N` is sent as at most 1 s (no worker settles a payment; the in-process run waits too)

DOCUMENT = document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=config(MAX_EXAMPLES))
SESSION = requests.Session()


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory, postgres_server: str, redis_server: str) -> Iterator[str]:
    """The API under gunicorn (one process, four threads) on a fresh, migrated PostgreSQL database."""
    tmp = tmp_path_factory.mktemp("contract-http")
    database_url, drop = create_pg_database(postgres_server)
    upgrade(database_url)
    queue = f"saga-contract-{uuid.uuid4().hex[:8]}"
    metrics = tmp / "metrics"
    metrics.mkdir()
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_server, "SAGA_QUEUE": queue,
           "BOOKMARKET_TOKENS": TOKENS_SETTING, "PROMETHEUS_MULTIPROC_DIR": str(metrics),
           "PAYMENT_URL": f"{NOWHERE}/payment", "DELIVERY_URL": f"{NOWHERE}/delivery",
           "MESSAGING_URL": f"{NOWHERE}/messaging", "SANDBOX_URL": NOWHERE}
    port = free_port()
    api = ProcessHandle(spawn(gunicorn_api("127.0.0.1", port, workers=1, threads=4), env, tmp / "api.log"),
                        log=tmp / "api.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", api.proc)
        yield url
    finally:
        api.stop()
        SESSION.close()
        forget_queue(REDIS_BASE_URL, queue)
        drop()


def test_gunicorn_serves_the_document_the_cases_come_from(api_url: str) -> None:
    served = SESSION.get(f"{api_url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == DOCUMENT


@schema.parametrize()
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # `counted` spans the inputs
def test_every_answer_over_http_matches_the_document(case: Case, api_url: str, counted: Counter) -> None:
    counted.cases += 1
    if case.headers and "Prefer" in case.headers:
        case.headers["Prefer"] = re.sub(r"wait\s*=\s*\d+", f"wait={MAX_WAIT}", str(case.headers["Prefer"]))
    case.call_and_validate(base_url=api_url, session=SESSION, headers=bearer("support"), timeout=30)


HUGE = "99999999999999999999"


def test_numbers_beyond_postgresqls_range_are_refused_as_documented_never_a_500(api_url: str) -> None:
    """What fuzzing at this budget may not reach: a page past any OFFSET, ids past an integer column."""
    get = lambda path: SESSION.get(f"{api_url}{path}", headers=bearer("support"), timeout=10)  # noqa: E731
    for path in ("/customers/1/orders", "/notifications", "/admin/sagas", "/admin/audit"):
        for page in (HUGE, "100001"):
            answer = get(f"{path}?page={page}")
            assert answer.status_code == 422, (path, page, answer.text)
            assert answer.headers["Content-Type"] == "application/problem+json" and "page" in answer.json()["errors"]
        assert get(f"{path}?page=100000").status_code == 200, path
    for path in (f"/orders/{HUGE}", "/orders/2147483648", "/sagas/2147483648", "/customers/2147483648/orders",
                 "/admin/sagas/2147483648", "/orders/2147483648/cancel"):
        answer = get(path) if not path.endswith("cancel") else SESSION.post(
            f"{api_url}{path}", json={}, headers=bearer("support"), timeout=10)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.headers["Content-Type"] == "application/problem+json"
    assert get("/orders/2147483647").status_code == 404  # the largest id: looked up, not found
    for query in (f"customer_id={HUGE}", "customer_id=2147483648"):
        assert get(f"/notifications?{query}").status_code == 422, query


def test_a_405_over_http_carries_allow_and_a_problem(api_url: str) -> None:
    for method, path, allowed in (("DELETE", "/orders", {"POST"}), ("PUT", "/orders/1", {"GET"}),
                                  ("PATCH", "/admin/bulk", {"POST"}), ("POST", "/healthz", {"GET"})):
        answer = SESSION.request(method, f"{api_url}{path}", headers=bearer("support"), timeout=10)
        assert answer.status_code == 405, (method, path)
        assert allowed <= {m.strip() for m in answer.headers["Allow"].split(",")}, answer.headers
        assert answer.headers["Content-Type"] == "application/problem+json"
