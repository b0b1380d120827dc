"""Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set, and then costs a check: no instrumentation, exporter
or SDK tracer is imported (redis-py imports a little of OpenTelemetry for its own metrics). On, the worker turns it
on once per process: at its start on the thread pool, in each child on prefork. (What a trace holds:
tests/integration/test_traces.py.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra import tracing
from tests.unit.fakes import settings_for
from workers import app as worker_app

ROOT = Path(__file__).resolve().parents[2]
UNSET = """
import sys
from api.app import create_app
from infra import tracing
from tests.unit.fakes import settings_for
from workers.app import create_celery
settings = settings_for("sqlite:///{db}")
create_app(settings)
create_celery(settings)
with tracing.step_span(1, 2, "pay", 1):
    tracing.tag_task(1, "pay")
ours = ("opentelemetry.instrumentation", "opentelemetry.exporter", "opentelemetry.sdk.trace")
print(sorted(m for m in sys.modules if m.startswith(ours)))
"""


def test_without_an_otlp_endpoint_the_api_and_the_worker_import_nothing_of_opentelemetry(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", UNSET.format(db=tmp_path / "unused.db")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("pool", "now"), [("threads", True), ("solo", True), ("prefork", False),
                                           ("celery.concurrency.prefork:TaskPool", False)])
def test_the_worker_turns_tracing_on_at_its_start_unless_its_pool_forks(
        monkeypatch: pytest.MonkeyPatch, pool: str, now: bool) -> None:
    calls: list[str] = []
    monkeypatch.setattr(tracing, "configure", lambda settings, service, **_: calls.append(service) or True)
    worker: Any = type("Worker", (), {"pool_cls": pool})()
    worker_app._trace_worker(settings_for("sqlite://"), worker)
    assert calls == (["bookmarket-worker"] if now else [])


def test_an_unset_endpoint_leaves_tracing_off() -> None:
    assert tracing.configure(settings_for("sqlite://"), "bookmarket-api") is False
