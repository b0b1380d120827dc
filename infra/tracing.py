"""OpenTelemetry traces, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: one trace per order, from POST /orders
through the Celery publish to each step and each provider HTTP call.

The instrumentation packages do the work (Flask's server span, Celery's publish and run spans with the W3C
traceparent in the task headers, urllib3's client spans); this module installs them once per process, from the API
app factory and the worker's process init, and adds a span per step attempt with the saga's ids. Unset, nothing of
OpenTelemetry is imported: `step_span` is a null context.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from infra.config import Settings

_tracer: Any = None  # the tracer of step spans, once tracing is on in this process


def configure(settings: Settings, service: str, flask_app: Any = None, provider: Any = None) -> bool:
    """Turn tracing on in this process when OTEL_EXPORTER_OTLP_ENDPOINT is set (or a tracer `provider` is given,
    as tests do); whether it is on.

    Our Publisher sends by task name (send_task): the Celery instrumentation's before_task_publish hook sees it all
    the same (the signal's sender is the name), opens the publish span and puts the traceparent in the headers,
    also in the API, whose Celery app has no task registered (tests/integration/test_traces.py)."""
    global _tracer
    if provider is None and not settings.otlp_endpoint:
        return False
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    if provider is None:
        provider = _exporting_provider(service)
    _tracer = provider.get_tracer("bookmarket")
    for instrumentor in (CeleryInstrumentor(), URLLib3Instrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
    if flask_app is not None:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor.instrument_app(flask_app, tracer_provider=provider)
    return True


def _exporting_provider(service: str) -> Any:
    """The process's tracer provider, exporting in batches over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (the
    exporter reads the standard OTEL_EXPORTER_OTLP_* variables itself)."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def tag_task(saga_id: int, step: str) -> None:
    """Put the saga's id and the step on the current span: in a step's task, Celery's run span."""
    if _tracer is not None:
        from opentelemetry import trace

        trace.get_current_span().set_attributes({"saga.id": saga_id, "saga.step": step})


def step_span(saga_id: int, order_id: int, step: str, attempt: int) -> contextlib.AbstractContextManager[Any]:
    """A span around one attempt of a step, with the saga's ids as attributes (a null context when tracing is off).
    Its provider call's HTTP span is its child."""
    if _tracer is None:
        return contextlib.nullcontext()
    return _span(saga_id, order_id, step, attempt)


@contextlib.contextmanager
def _span(saga_id: int, order_id: int, step: str, attempt: int) -> Iterator[Any]:
    attributes = {"saga.id": saga_id, "order.id": order_id, "saga.step": step, "saga.attempt": attempt}
    with _tracer.start_as_current_span(f"step {step}", attributes=attributes) as span:
        yield span
