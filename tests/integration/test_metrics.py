"""GET /metrics across processes: the API under gunicorn (two processes) and a real Celery worker process share
PROMETHEUS_MULTIPROC_DIR, as under `bookmarket up`; real sagas on PostgreSQL and Redis move the counters and
histograms written by both sides, and the worker serves its own metrics on WORKER_METRICS_PORT."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cli.main import gunicorn_api
from tests.integration.conftest import TERMINAL_SAGA, Stack, build_stack
from tests.support import ProcessHandle, bearer, free_port, spawn, wait_http, wait_until

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Metered:
    stack: Stack
    api: ProcessHandle
    worker_metrics_url: str

    def post_order(self, qty: int = 1) -> dict[str, Any]:
        answer = requests.post(f"{self.api.url}/orders", json={"customer_id": 3, "book_id": 1, "qty": qty},
                               headers=bearer(), timeout=10)
        assert answer.status_code == 202, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def wait_saga(self, saga_id: int) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            saga: dict[str, Any] = requests.get(f"{self.api.url}/sagas/{saga_id}", headers=bearer(), timeout=5).json()
            return saga if saga["status"] in TERMINAL_SAGA else None

        return wait_until(ended, 30, 0.1, f"saga {saga_id} to end")

    def scrape(self, url: str | None = None) -> Samples:
        answer = requests.get(url or f"{self.api.url}/metrics", timeout=5)  # no token: open by default
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"].startswith("text/plain")
        families = text_string_to_metric_families(answer.text)
        return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory, postgres_server: str, redis_server: str) -> Iterator[Metered]:
    tmp = tmp_path_factory.mktemp("metrics")
    folder = tmp / "prometheus"
    folder.mkdir()
    worker_port = free_port()
    with build_stack(tmp, "postgresql", postgres_server, PROMETHEUS_MULTIPROC_DIR=str(folder),
                     WORKER_METRICS_PORT=str(worker_port)) as stack:
        port = free_port()
        proc = spawn(gunicorn_api("127.0.0.1", port), stack.env, tmp / "api.log")
        api = ProcessHandle(proc, f"http://127.0.0.1:{port}", tmp / "api.log")
        try:
            wait_http(f"{api.url}/health/live", proc)
            yield Metered(stack, api, f"http://127.0.0.1:{worker_port}/metrics")
        finally:
            api.stop()


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_real_sagas_move_the_saga_and_step_counters_of_the_api_and_worker_processes(metered: Metered) -> None:
    metered.stack.sandbox.reset()
    before = metered.scrape()
    sagas = [metered.wait_saga(metered.post_order()["saga_id"]) for _ in range(3)]
    assert {s["status"] for s in sagas} == {"COMPLETED"}
    after = metered.scrape()

    assert moved(before, after, "bookmarket_sagas_started_total", kind="order") == 3  # counted by the API
    assert moved(before, after, "bookmarket_sagas_finished_total", kind="order", outcome="COMPLETED") == 3
    assert moved(before, after, "bookmarket_saga_duration_seconds_count", kind="order", outcome="COMPLETED") == 3
    assert moved(before, after, "bookmarket_saga_duration_seconds_sum", kind="order", outcome="COMPLETED") > 0
    for step in ("pay", "ship", "notify"):
        assert moved(before, after, "bookmarket_step_attempts_total", step=step, outcome="SUCCEEDED") == 3, step
        assert moved(before, after, "bookmarket_step_duration_seconds_count", step=step, outcome="SUCCEEDED") == 3
    assert ("bookmarket_provider_calls_in_flight", frozenset({("provider", "payment")})) in after  # the worker's
    assert value(after, "bookmarket_provider_calls_in_flight", provider="payment") == 0
    assert value(after, "bookmarket_scrape_error", source="database") == 0
    assert value(after, "bookmarket_scrape_error", source="redis") == 0
    assert value(after, "bookmarket_breaker_state", provider="payment") == 0
    assert value(after, "bookmarket_queue_depth", queue=metered.stack.settings.queue) == 0
    assert value(after, "bookmarket_sagas_active", kind="order") == 0


def test_a_declined_payment_counts_a_failed_attempt_and_a_compensated_saga(metered: Metered) -> None:
    metered.stack.sandbox.reset()
    metered.stack.sandbox.behave("payment", decline_over=1)
    before = metered.scrape()
    saga = metered.wait_saga(metered.post_order()["saga_id"])
    after = metered.scrape()

    assert moved(before, after, "bookmarket_step_attempts_total", step="pay", outcome="FAILED") == 1
    assert moved(before, after, "bookmarket_sagas_finished_total", kind="order", outcome=saga["status"]) == 1
    assert moved(before, after, "bookmarket_step_attempts_total", step="ship", outcome="SUCCEEDED") == 0


def test_the_worker_serves_its_own_metrics_on_its_port(metered: Metered) -> None:
    metered.stack.sandbox.reset()
    metered.wait_saga(metered.post_order()["saga_id"])
    samples = metered.scrape(metered.worker_metrics_url)

    assert value(samples, "bookmarket_step_attempts_total", step="pay", outcome="SUCCEEDED") >= 1
    assert not [k for k, _ in samples if k == "bookmarket_scrape_error"]  # events only: the state is the API's


def test_the_api_processes_share_one_page(metered: Metered) -> None:
    """Whichever of the two gunicorn processes answers, the page holds the orders both placed."""
    metered.stack.sandbox.reset()
    for _ in range(4):
        metered.wait_saga(metered.post_order()["saga_id"])
    pages = [metered.scrape() for _ in range(8)]
    started = {value(p, "bookmarket_sagas_started_total", kind="order") for p in pages}
    assert len(started) == 1 and started.pop() >= 4
