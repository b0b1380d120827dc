"""One trace per order: the API's POST /orders span, the Celery publish, the worker's run and step spans and each
provider HTTP call, with the saga's id and step as attributes.

The spans go to an in-memory exporter, so the worker runs in this process: Celery's own test worker
(celery.contrib.testing.worker.start_worker, thread pool) consuming from the real Redis, so the traceparent really
travels in the message headers through the broker. The API is the real Flask app, the providers the real sandbox
process, called over HTTP by urllib3. The current Celery app in this thread has no tasks, as in an API
process, where no app with the tasks exists: our Publisher sends by name, and the instrumentation's
before_task_publish hook must still see it (the test makes an app without tasks current first, and the worker's
tasks are registered on its app only).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from api.app import create_app
from infra import tracing
from infra.config import Settings
from infra.migrate import upgrade
from tests.integration.conftest import TERMINAL_SAGA, forget_queue, stack_env
from tests.support import api_client, free_port, start_sandbox, wait_until
from workers.app import create_celery

pytestmark = pytest.mark.integration


@pytest.fixture
def traced(tmp_path: Path, redis_server: str,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, InMemorySpanExporter]]:
    """The API's test client and a worker in this process, both traced into one in-memory exporter."""
    database_url = f"sqlite:///{tmp_path / 'bookmarket.db'}"
    upgrade(database_url)
    sandbox = start_sandbox(free_port(), tmp_path)
    env = {**stack_env(database_url, sandbox.url, f"saga-traces-{uuid.uuid4().hex[:8]}"), "SWEEP_IN_WORKER": "0"}
    settings = Settings.from_env(env)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", None)
    worker_app = create_celery(settings)
    app = create_app(settings)
    try:
        with start_worker(worker_app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="WARNING",
                          shutdown_timeout=15):
            Celery("an-api-process", set_as_current=True)  # as in an API process: no app with the tasks is current
            assert tracing.configure(settings, "bookmarket-test", flask_app=app, provider=provider)
            yield api_client(app), exporter
    finally:
        CeleryInstrumentor().uninstrument()
        URLLib3Instrumentor().uninstrument()
        app.extensions["bookmarket"].close()
        sandbox.stop()
        forget_queue(env["REDIS_URL"], env["SAGA_QUEUE"])


def test_one_trace_runs_from_post_orders_through_the_publish_to_each_step_and_provider_call(
        traced: tuple[Any, InMemorySpanExporter]) -> None:
    client, exporter = traced
    posted = client.post("/orders", json={"customer_id": 1, "book_id": 1, "qty": 1})
    assert posted.status_code == 202, posted.get_json()
    saga_id = posted.get_json()["saga_id"]
    saga = wait_until(lambda: (s := client.get(f"/sagas/{saga_id}").get_json())["status"] in TERMINAL_SAGA and s,
                      30, 0.1, "the saga to end")
    assert saga["status"] == "COMPLETED"

    spans = wait_until(lambda: _trace_of_post(exporter.get_finished_spans(), steps=3), 10, 0.1, "the step spans")
    by_id = {s.context.span_id: s for s in spans}
    server = _one(spans, "POST /orders", SpanKind.SERVER)
    publish = _one(spans, "apply_async/saga.pay", SpanKind.PRODUCER)
    run = _one(spans, "run/saga.pay", SpanKind.CONSUMER)
    assert _parent(publish, by_id) is server  # the publish happens inside the request
    assert publish.status.status_code is StatusCode.UNSET and not publish.events
    assert _parent(run, by_id) is publish  # the traceparent came through Redis in the task headers
    assert run.attributes["saga.id"] == saga_id and run.attributes["saga.step"] == "pay"

    steps = [s for s in spans if s.name.startswith("step ")]
    assert [(s.name, s.attributes["saga.step"], s.attributes["saga.id"], s.attributes["saga.attempt"])
            for s in steps] == [(f"step {n}", n, saga_id, 1) for n in ("pay", "ship", "notify")]  # pay runs the rest
    assert all(_parent(s, by_id) is run for s in steps)
    calls = [s for s in spans if s.kind is SpanKind.CLIENT and s.name == "POST"]
    assert sorted(_parent(c, by_id).name for c in calls) == ["step notify", "step pay", "step ship"]
    assert {c.attributes.get("url.full", c.attributes.get("http.url", "")).rsplit("/", 1)[-1] for c in calls} \
        == {"charges", "shipments", "messages"}


def _trace_of_post(finished: tuple[ReadableSpan, ...], steps: int) -> list[ReadableSpan] | None:
    """The spans of the POST /orders trace, once it has `steps` step spans."""
    post = [s for s in finished if s.name == "POST /orders"]
    if not post:
        return None
    trace_id = post[0].context.trace_id
    spans = [s for s in finished if s.context.trace_id == trace_id]
    return spans if len([s for s in spans if s.name.startswith("step ")]) >= steps else None


def _one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.name == name and s.kind is kind]
    assert len(found) == 1, f"{name}: {[(s.name, s.kind) for s in spans]}"
    return found[0]


def _parent(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> ReadableSpan | None:
    return by_id.get(span.parent.span_id) if span.parent is not None else None
