"""GET /metrics on the fast tier: the Prometheus text format, the state gauges after sagas in known states (the real
services on SQLite, driven by the engine fakes), the event counters they moved, and access by METRICS_ROLE."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import fakeredis
import pytest
import redis
import requests
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from api import gunicorn_conf
from api.app import create_app
from cli.main import gunicorn_api, metrics_folder
from domain.errors import Overloaded
from infra.breakers import BreakerPolicy, Breakers
from infra.bulkheads import Bulkheads
from infra.db import Database
from infra.metrics import MULTIPROC_DIR, forget_process
from infra.metrics import serve as metrics_serve
from infra.providers import ProviderError
from saga.order_saga import DEFINITIONS, ORDER_SAGA
from services.admission import Admission
from services.runtime import Runtime
from services.steps import claim
from tests.support import ROOT, api_client, bearer, free_port
from tests.unit.engine_fakes import Engine, engine_fixture, vanish_after_the_call

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


def scrape(client: FlaskClient, **headers: str) -> Samples:
    """GET /metrics, parsed by prometheus_client's own parser into {(sample name, labels): value}."""
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.mimetype == "text/plain"
    families = text_string_to_metric_families(answer.get_data(as_text=True))
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def open_client(rt: Runtime, **settings: object) -> FlaskClient:
    """A client of the API on `rt` sending no token."""
    rt.settings = replace(rt.settings, **settings)
    client = create_app(rt.settings, runtime=rt).test_client()
    client.environ_base.pop("HTTP_AUTHORIZATION", None)
    return client


def shared_breakers(client: redis.Redis) -> Breakers:
    """Real breakers on a Redis of their own that open at the first failure."""
    return Breakers(client, {p: BreakerPolicy(fail_max=1) for p in ("payment", "delivery", "messaging")},
                    namespace="bookmarket:saga:breaker")


def fail(breakers: Breakers, provider: str) -> None:
    def broken() -> None:
        raise ProviderError("down", uncertain=False)

    with pytest.raises(ProviderError):
        breakers.call(provider, broken)


def test_metrics_are_open_by_default_and_parse_as_prometheus_text(engine: Engine) -> None:
    engine.rt.breakers = shared_breakers(fakeredis.FakeRedis())
    samples = scrape(open_client(engine.rt))

    assert value(samples, "bookmarket_sagas_parked", kind="order") == 0
    assert value(samples, "bookmarket_sagas_active", kind="order") == 0
    assert {k for k, _ in samples} >= {"bookmarket_sagas_waiting", "bookmarket_sagas_stuck", "bookmarket_breaker_state",
                                       "bookmarket_queue_depth", "bookmarket_scrape_error"}
    assert value(samples, "bookmarket_scrape_error", source="database") == 0
    assert value(samples, "bookmarket_scrape_error", source="redis") == 0


def test_the_state_gauges_count_parked_active_waiting_and_stuck_sagas(engine: Engine) -> None:
    engine.play()  # completed
    engine.play("charge", *["lost"] * ORDER_SAGA.step("pay").retry.max_attempts)  # parked FAILED
    engine.breakers.open("payment", retry_after_s=30, for_s=math.inf)
    engine.place()
    engine.deliver()  # its payment blocked: the step waits for the breaker
    engine.place()  # published, never delivered: due now, not started
    engine.rt.breakers = shared_breakers(fakeredis.FakeRedis())
    client = open_client(engine.rt)

    samples = scrape(client)
    assert value(samples, "bookmarket_sagas_parked", kind="order") == 1
    assert value(samples, "bookmarket_sagas_parked", kind="cancel") == 0
    assert value(samples, "bookmarket_sagas_active", kind="order") == 2
    assert value(samples, "bookmarket_sagas_waiting") == 1
    assert value(samples, "bookmarket_sagas_stuck", reason="not_started") == 0

    engine.clock.advance(engine.rt.settings.stuck_after_s + 31)  # past the waiting step's due time too
    later = scrape(client)
    assert value(later, "bookmarket_sagas_stuck", reason="not_started") == 2
    assert value(later, "bookmarket_sagas_stuck", reason="lease_expired") == 0


def test_a_step_running_past_its_lease_counts_as_stuck(engine: Engine) -> None:
    placed = engine.place()
    engine.delivered = len(engine.publisher.sent)
    assert claim(engine.rt, placed.saga_id, "pay", "doomed") is not None
    engine.rt.breakers = shared_breakers(fakeredis.FakeRedis())
    client = open_client(engine.rt)
    assert value(scrape(client), "bookmarket_sagas_stuck", reason="lease_expired") == 0

    engine.clock.advance(engine.rt.settings.step_lease_s + 1)
    assert value(scrape(client), "bookmarket_sagas_stuck", reason="lease_expired") == 1


def test_sagas_and_steps_move_their_counters_and_histograms_with_kind_step_and_outcome(engine: Engine) -> None:
    engine.rt.breakers = shared_breakers(fakeredis.FakeRedis())
    client = open_client(engine.rt)
    before = scrape(client)
    engine.rt.breakers = engine.breakers  # the fakes run the sagas
    engine.play()
    engine.play("charge", "transient", "ok")
    engine.play("charge", *["lost"] * ORDER_SAGA.step("pay").retry.max_attempts)
    engine.rt.breakers = shared_breakers(fakeredis.FakeRedis())
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("bookmarket_sagas_started_total", kind="order") == 3
    assert moved("bookmarket_sagas_finished_total", kind="order", outcome="COMPLETED") == 2
    assert moved("bookmarket_sagas_finished_total", kind="order", outcome="FAILED") == 1
    assert moved("bookmarket_saga_duration_seconds_count", kind="order", outcome="COMPLETED") == 2
    assert moved("bookmarket_step_attempts_total", step="pay", outcome="SUCCEEDED") == 2
    assert moved("bookmarket_step_attempts_total", step="pay", outcome="FAILED") == 6
    assert moved("bookmarket_step_attempts_total", step="ship", outcome="SUCCEEDED") == 2
    assert moved("bookmarket_step_duration_seconds_count", step="pay", outcome="FAILED") == 6
    assert moved("bookmarket_step_duration_seconds_bucket", step="pay", outcome="SUCCEEDED", le="+Inf") == 2


def test_a_lost_attempt_and_a_blocked_one_are_counted_as_such(engine: Engine) -> None:
    before = REGISTRY.get_sample_value("bookmarket_step_attempts_total", {"step": "pay", "outcome": "LOST"}) or 0
    blocked = REGISTRY.get_sample_value("bookmarket_step_attempts_total", {"step": "pay", "outcome": "BLOCKED"}) or 0
    placed = engine.place()
    vanish_after_the_call(engine, placed.saga_id, "pay")
    engine.clock.advance(engine.rt.settings.step_lease_s + 1)
    engine.sweep()
    engine.breakers.open("payment", retry_after_s=5)
    engine.place()
    engine.deliver()

    assert REGISTRY.get_sample_value("bookmarket_step_attempts_total", {"step": "pay", "outcome": "LOST"}) == before + 1
    assert REGISTRY.get_sample_value("bookmarket_step_attempts_total",
                                     {"step": "pay", "outcome": "BLOCKED"}) == blocked + 1


def test_breaker_states_and_queue_depth_are_read_from_redis(engine: Engine) -> None:
    client_redis = fakeredis.FakeRedis()
    breakers = shared_breakers(client_redis)
    engine.rt.breakers = breakers
    fail(breakers, "delivery")
    client_redis.rpush(engine.rt.settings.queue, b"a", b"b", b"c")

    samples = scrape(open_client(engine.rt))
    assert value(samples, "bookmarket_breaker_state", provider="delivery") == 2
    assert value(samples, "bookmarket_breaker_state", provider="payment") == 0
    assert value(samples, "bookmarket_queue_depth", queue=engine.rt.settings.queue) == 3


def test_with_step_queues_the_queue_depth_has_a_sample_per_queue(engine: Engine) -> None:
    client_redis = fakeredis.FakeRedis()
    engine.rt.breakers = shared_breakers(client_redis)
    engine.rt.settings = replace(engine.rt.settings, step_queues={"payment": "bm.payment"})
    client_redis.rpush("bm.payment", b"a", b"b")
    client_redis.rpush(engine.rt.settings.queue, b"c")

    samples = scrape(open_client(engine.rt))
    assert value(samples, "bookmarket_queue_depth", queue="bm.payment") == 2
    assert value(samples, "bookmarket_queue_depth", queue=engine.rt.settings.queue) == 1


def test_with_redis_down_the_scrape_answers_the_database_gauges_and_says_redis_failed(engine: Engine) -> None:
    engine.play("charge", *["lost"] * ORDER_SAGA.step("pay").retry.max_attempts)
    nowhere = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    engine.rt.breakers = shared_breakers(nowhere)

    samples = scrape(open_client(engine.rt))
    assert value(samples, "bookmarket_scrape_error", source="redis") == 1
    assert value(samples, "bookmarket_scrape_error", source="database") == 0
    assert value(samples, "bookmarket_sagas_parked", kind="order") == 1
    assert not [k for k, _ in samples if k == "bookmarket_breaker_state"]


def test_with_the_database_down_the_scrape_answers_the_rest_and_says_the_database_failed(
    engine: Engine, tmp_path: Path,
) -> None:
    engine.rt.breakers = shared_breakers(fakeredis.FakeRedis())
    client = open_client(engine.rt)
    engine.rt.db = Database.from_url(f"sqlite:///{tmp_path / 'missing' / 'gone.db'}")

    samples = scrape(client)
    assert value(samples, "bookmarket_scrape_error", source="database") == 1
    assert value(samples, "bookmarket_scrape_error", source="redis") == 0
    assert not [k for k, _ in samples if k == "bookmarket_sagas_parked"]
    assert value(samples, "bookmarket_breaker_state", provider="payment") == 0


def test_metrics_role_puts_metrics_behind_that_role(runtime: Runtime) -> None:
    runtime.breakers = shared_breakers(fakeredis.FakeRedis())
    client = open_client(runtime, metrics_role="viewer")

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer("storefront")).status_code == 403
    scrape(client, **bearer("viewer"))
    scrape(client, **bearer("support"))


def test_the_openapi_document_lists_metrics_as_text_with_its_access(runtime: Runtime) -> None:
    spec = api_client(create_app(runtime.settings, runtime=runtime)).get("/openapi.json").get_json()
    get = spec["paths"]["/metrics"]["get"]
    assert "text/plain" in get["responses"]["200"]["content"]
    assert "security" not in get and "x-roles" not in get and "METRICS_ROLE" in get["description"]

    guarded = create_app(replace(runtime.settings, metrics_role="viewer"), runtime=runtime)
    get = api_client(guarded).get("/openapi.json").get_json()["paths"]["/metrics"]["get"]
    assert get["x-roles"] == ["support", "viewer"]
    assert get["security"] == [{"bearerAuth": []}]


def test_an_unknown_metrics_role_stops_the_api_at_start(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="unknown role 'admin'"):
        create_app(replace(runtime.settings, metrics_role="admin"), runtime=runtime)


def test_admission_refusals_are_counted_by_reason(engine: Engine) -> None:
    def refused(reason: str) -> float:
        return REGISTRY.get_sample_value("bookmarket_admission_refusals_total", {"reason": reason}) or 0

    before = refused("breaker_open")
    engine.breakers.open("payment", retry_after_s=5)
    with pytest.raises(Overloaded):
        Admission().check(engine.rt)
    assert refused("breaker_open") == before + 1


def test_calls_in_flight_are_counted_per_provider_while_they_run() -> None:
    def in_flight(provider: str) -> float | None:
        return REGISTRY.get_sample_value("bookmarket_provider_calls_in_flight", {"provider": provider})

    bulkheads = Bulkheads({"payment": 2})
    base = {p: in_flight(p) or 0 for p in ("payment", "delivery")}
    with bulkheads.slot("payment"), bulkheads.slot("payment"), bulkheads.slot("delivery"):
        assert in_flight("payment") == base["payment"] + 2
        assert in_flight("delivery") == base["delivery"] + 1
    assert (in_flight("payment"), in_flight("delivery")) == (base["payment"], base["delivery"])


def test_every_saga_kind_has_its_gauge_sample_even_at_zero(engine: Engine) -> None:
    engine.rt.breakers = shared_breakers(fakeredis.FakeRedis())
    samples = scrape(open_client(engine.rt))
    for kind in DEFINITIONS:
        assert ("bookmarket_sagas_active", frozenset({("kind", kind)})) in samples


def write_metrics_in_another_process(folder: Path) -> int:
    """A process in multiprocess mode (as an API or worker process is) that counts a step attempt and leaves a call
    in flight when it exits; its pid."""
    code = ("import os; from infra import metrics; metrics.step_attempted('pay', 'SUCCEEDED', 0.2); "
            "metrics.CALLS_IN_FLIGHT.labels('payment').inc(); print(os.getpid())")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, MULTIPROC_DIR: str(folder)},
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return int(done.stdout)


def test_the_page_sums_the_processes_sharing_the_folder_and_forgets_a_dead_ones_calls_in_flight(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime.breakers = shared_breakers(fakeredis.FakeRedis())
    client = open_client(runtime)
    mine = value(scrape(client), "bookmarket_step_attempts_total", step="pay", outcome="SUCCEEDED")
    folder = tmp_path / "metrics"
    folder.mkdir()
    pid = write_metrics_in_another_process(folder)
    monkeypatch.setenv(MULTIPROC_DIR, str(folder))

    samples = scrape(client)
    assert value(samples, "bookmarket_step_attempts_total", step="pay", outcome="SUCCEEDED") == mine + 1
    assert value(samples, "bookmarket_step_duration_seconds_count", step="pay", outcome="SUCCEEDED") >= 1
    assert value(samples, "bookmarket_provider_calls_in_flight", provider="payment") == 1

    forget_process(pid)
    assert value(scrape(client), "bookmarket_provider_calls_in_flight", provider="payment") == 0


def test_bookmarket_up_empties_its_metrics_folder_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"old")

    assert metrics_folder(folder) == str(folder)
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_the_apis_gunicorn_forgets_the_calls_in_flight_of_a_process_that_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = gunicorn_api("127.0.0.1", 1)
    assert argv[argv.index("--config") + 1] == "python:api.gunicorn_conf"
    folder = tmp_path / "metrics"
    folder.mkdir()
    pid = write_metrics_in_another_process(folder)
    monkeypatch.setenv(MULTIPROC_DIR, str(folder))

    gunicorn_conf.child_exit(None, SimpleNamespace(pid=pid))

    assert not (folder / f"gauge_livesum_{pid}.db").exists()
    assert (folder / f"counter_{pid}.db").exists()  # what it counted still counts


def test_the_dashboard_and_the_readme_name_exactly_the_metrics_the_page_has(engine: Engine) -> None:
    engine.rt.breakers = shared_breakers(fakeredis.FakeRedis())
    page = open_client(engine.rt).get("/metrics").get_data(as_text=True)
    ours = {f.name for f in text_string_to_metric_families(page) if f.name.startswith("bookmarket_")}
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "bookmarket.json").read_text())
    expressions = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    charted = {re.sub(r"_(bucket|total|count|sum)$", "", n) for n in re.findall(r"bookmarket_\w+", expressions)}
    readme = (ROOT / "README.md").read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = {re.sub(r"_(total)$", "", n) for n in re.findall(r"`(bookmarket_\w+)`", readme)}

    assert charted == ours
    assert documented == ours


def test_a_worker_serves_its_metrics_on_its_port_and_runs_on_when_the_port_is_taken(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    metrics_serve(port)
    page = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "# TYPE bookmarket_step_attempts_total counter" in page

    metrics_serve(port)  # taken now
    assert f"WORKER_METRICS_PORT {port}" in caplog.text
    metrics_serve(0)  # off: nothing to do
