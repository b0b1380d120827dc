"""Probes and log lines in process: /healthz and /readyz (bounded checks), the request id from the API to the step
messages and back into a task's log context, the saga's fields on the step's log lines, the JSON and text formats,
`bookmarket worker-alive` and the worker's heartbeat."""
from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery.app.task import Context
from celery.bootsteps import CLOSE, RUN
from flask.testing import FlaskClient

from api.app import create_app
from cli.main import main
from infra.broker import Publisher
from infra.config import Settings
from infra.logs import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    current,
    handler,
    log_context,
    request_id_from,
    signal_safe_say,
)
from services.health import Readiness
from services.runtime import Runtime
from tests.support import api_client
from tests.unit.engine_fakes import Engine, engine_fixture
from workers.app import request_id
from workers.heartbeat import Heartbeat


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return api_client(create_app(runtime.settings, runtime=runtime))


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


def ok() -> None:
    return None


def refused() -> None:
    raise ConnectionError("connection refused")


def with_checks(client: FlaskClient, **checks: Any) -> None:
    assert client.application is not None
    client.application.extensions["bookmarket.readiness"] = Readiness(checks, timeout_s=0.3)


# --- probes --------------------------------------------------------------------------------------------------------
def test_healthz_answers_while_the_process_serves_http_whatever_its_dependencies(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"Authorization": ""})
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_answers_200_with_each_check_when_the_database_and_the_broker_answer(client: FlaskClient) -> None:
    with_checks(client, database=ok, broker=ok)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_answers_a_503_problem_naming_what_is_down(client: FlaskClient) -> None:
    with_checks(client, database=ok, broker=refused)
    response = client.get("/readyz")
    body = response.get_json()
    assert (response.status_code, response.mimetype) == (503, "application/problem+json")
    assert body["title"] == "Service Unavailable"
    assert body["detail"] == "not ready: broker: error: ConnectionError"
    assert body["checks"] == {"database": "ok", "broker": "error: ConnectionError"}


def test_readyz_of_the_unit_stack_names_the_broker_it_cannot_reach_and_the_database_it_reads(
    client: FlaskClient,
) -> None:
    body = client.get("/readyz").get_json()
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"].startswith("error")


def test_a_hanging_check_answers_timeout_within_its_bound_and_is_not_started_again_until_it_returns() -> None:
    release, calls = threading.Event(), []

    def hangs() -> None:
        calls.append(1)
        release.wait(10)

    readiness = Readiness({"database": hangs}, timeout_s=0.2)
    for _ in range(2):
        started = time.monotonic()
        assert readiness.check() == {"database": "timeout: no answer within 0.2s"}
        assert time.monotonic() - started < 0.5
    assert len(calls) == 1  # the second probe waited on the stuck check instead of starting another thread
    release.set()
    time.sleep(0.05)
    assert readiness.check() == {"database": "ok"} and len(calls) == 2


def test_the_openapi_documents_the_probes_as_open_operations(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    for path in ("/healthz", "/readyz"):
        assert "security" not in paths[path]["get"] and "200" in paths[path]["get"]["responses"]
    assert "503" in paths["/readyz"]["get"]["responses"]


# --- request ids ---------------------------------------------------------------------------------------------------
def test_the_request_id_given_is_answered_and_one_is_made_when_none_or_a_bad_one_is_given(client: FlaskClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz").headers["X-Request-ID"]
    assert len(made) == 32 and int(made, 16) >= 0
    for bad in ('quote"d', "x" * 129, "tab\there"):
        assert request_id_from(bad) != bad
    assert client.get("/healthz", headers={"X-Request-ID": "x" * 129}).headers["X-Request-ID"] != "x" * 129


def test_placing_an_order_logs_the_order_and_saga_with_the_callers_request_id(
    client: FlaskClient, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    response = client.post("/orders", json={"customer_id": 7, "book_id": 2, "qty": 1},
                           headers={"X-Request-ID": "req-42"})
    assert response.status_code == 202 and response.headers["X-Request-ID"] == "req-42"
    placed = [r for r in caplog.records if r.name == "services.orders"]
    assert [(r.request_id, r.order_id, r.saga_id) for r in placed] == [  # type: ignore[attr-defined]
        ("req-42", response.get_json()["id"], response.get_json()["saga_id"])]
    assert current("request_id") is None  # the request's context is gone after it


class SendingApp:
    """What Publisher needs of a Celery app; it records each send_task's keyword arguments."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.producer_pool = SimpleNamespace(acquire=self._acquire)

    @contextmanager
    def _acquire(self, **_: Any) -> Iterator[object]:
        yield object()

    def send_task(self, name: str, **kwargs: Any) -> None:
        self.sent.append({"name": name, **kwargs})


def test_the_publisher_puts_the_request_id_of_its_log_context_in_the_message_headers() -> None:
    app = SendingApp()
    publisher = Publisher(app, "saga")  # type: ignore[arg-type]
    with log_context(request_id="req-7"):
        assert publisher.publish([(1, "pay")]) == []
    assert publisher.publish([(2, "pay")]) == []  # the sweeper's sends: no request
    assert [m["headers"] for m in app.sent] == [{"request_id": "req-7"}, {}]


def test_a_task_takes_the_request_id_from_its_message_headers() -> None:
    assert request_id(SimpleNamespace(request=Context(request_id="req-1"))) == "req-1"  # type: ignore[arg-type]
    assert request_id(SimpleNamespace(request=Context(headers={"request_id": "req-2"}))) == "req-2"  # type: ignore
    assert request_id(SimpleNamespace(request=Context())) is None  # type: ignore[arg-type]


# --- the saga's fields on the step's lines -------------------------------------------------------------------------
def test_every_line_a_step_writes_carries_its_saga_order_step_and_attempt_and_the_context_is_cleared_after(
    engine: Engine, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    engine.providers.script("ship", "transient")
    with log_context(request_id="req-9"):
        view = engine.play()
    lines = [r for r in caplog.records if r.name == "services.steps"]
    assert {r.step for r in lines} >= {"pay", "ship", "notify"}  # type: ignore[attr-defined]
    assert any(r.levelno == logging.WARNING and r.step == "ship" for r in lines)  # type: ignore[attr-defined]
    for r in lines:
        assert (r.saga_id, r.order_id, r.request_id) == (view.saga_id, view.order.id, "req-9")  # type: ignore
        assert isinstance(r.attempt, int)  # type: ignore[attr-defined]
    assert [r.attempt for r in lines if r.step == "ship"][-1] == 2  # type: ignore[attr-defined]
    assert current("saga_id") is None


# --- formats -------------------------------------------------------------------------------------------------------
def record(message: str = "step %s done", *args: object, exc: bool = False) -> logging.LogRecord:
    made = logging.LogRecord("services.steps", logging.INFO, __file__, 1, message, args or ("pay",), None)
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys
            made.exc_info = sys.exc_info()
    return made


def test_a_json_line_holds_the_message_the_context_the_extra_fields_and_the_exception() -> None:
    stream = io.StringIO()
    log = logging.getLogger("tests.json")
    log.propagate = False
    log.addHandler(handler("json", stream))
    with log_context(saga_id=3, order_id=4, step="pay", attempt=1, request_id="r"):
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("step %s raised", "pay", extra={"provider": "payment"})
    line = json.loads(stream.getvalue())
    assert line["message"] == "step pay raised" and line["level"] == "ERROR" and line["logger"] == "tests.json"
    assert (line["saga_id"], line["order_id"], line["step"], line["attempt"], line["request_id"]) == (3, 4, "pay", 1,
                                                                                                      "r")
    assert line["provider"] == "payment" and "ValueError: boom" in line["exc"] and line["ts"].endswith("+00:00")


def test_celerys_traceback_in_extra_is_left_out_when_the_line_has_no_exception() -> None:
    """Celery passes every task error's traceback in `extra` and prints it only when its policy says so (not for
    a task's expected `throws`); a line with the exception itself keeps it."""
    stream = io.StringIO()
    log = logging.getLogger("tests.json.celery")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler("json", stream))
    data = {"id": "t1", "traceback": "Traceback (most recent call last): ...", "description": "raised expected"}
    log.info("Task %(id)s raised expected", data, extra={"data": data})
    try:
        raise ValueError("boom")
    except ValueError:
        log.error("Task %(id)s raised unexpected", data, exc_info=True, extra={"data": data})
    expected, unexpected = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "traceback" not in expected["data"] and "Traceback" not in json.dumps(expected)
    assert expected["data"]["description"] == "raised expected"
    assert "traceback" in unexpected["data"] and "ValueError: boom" in unexpected["exc"]


def test_a_text_line_ends_with_the_context_fields() -> None:
    made = record()
    made.saga_id, made.step = 3, "pay"  # type: ignore[attr-defined]
    assert TextFormatter().format(made).endswith("services.steps: step pay done [saga_id=3 step=pay]")
    assert "\n" not in JsonFormatter().format(record(exc=True))


def test_configure_logging_replaces_only_its_own_handler_and_log_format_is_checked() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        configure_logging("json")
        configure_logging("text")
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1 and isinstance(added[0].formatter, TextFormatter)
    finally:
        for h in [h for h in root.handlers if h not in before]:
            root.removeHandler(h)
        root.setLevel(level)
        logging.captureWarnings(False)
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        Settings.from_env({"LOG_FORMAT": "xml"})
    assert Settings.from_env({}).log_format == "json"


def test_celerys_shutdown_lines_printed_in_a_signal_handler_are_json_lines_too(tmp_path: Path) -> None:
    path = tmp_path / "out"
    with path.open("w") as out:
        signal_safe_say("json", "celery.apps.worker")("worker: Warm shutdown (MainProcess)", out)
    line = json.loads(path.read_text())
    assert (line["logger"], line["message"]) == ("celery.apps.worker", "worker: Warm shutdown (MainProcess)")


# --- worker liveness -----------------------------------------------------------------------------------------------
@pytest.fixture
def heartbeat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "worker.heartbeat"
    monkeypatch.setenv("WORKER_HEARTBEAT_FILE", str(path))
    monkeypatch.setenv("WORKER_HEARTBEAT_S", "5")
    return path


def test_worker_alive_exits_0_on_a_fresh_heartbeat_and_1_on_an_old_or_missing_one(
    heartbeat_file: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["worker-alive"]) == 1
    assert "does not exist" in capsys.readouterr().err
    heartbeat_file.touch()
    assert main(["worker-alive"]) == 0
    old = time.time() - 21
    os.utime(heartbeat_file, (old, old))
    assert main(["worker-alive"]) == 1  # default: 4 heartbeats of 5 s
    assert "is 21.0s old (more than 20s)" in capsys.readouterr().err
    assert main(["worker-alive", "--max-age", "60"]) == 0


def test_the_heartbeat_touches_its_file_while_the_consumer_runs_and_removes_it_when_the_worker_stops(
    heartbeat_file: Path,
) -> None:
    consumer = SimpleNamespace(blueprint=SimpleNamespace(state=RUN))
    beat = Heartbeat(str(heartbeat_file), 0.02)
    beat.start(sender=consumer)
    try:
        assert_soon(heartbeat_file.exists)
        consumer.blueprint.state = CLOSE
        time.sleep(0.05)
        stamp = heartbeat_file.stat().st_mtime
        time.sleep(0.1)
        assert heartbeat_file.stat().st_mtime == stamp  # a consumer that stopped is no longer vouched for
    finally:
        beat.stop()
    assert not heartbeat_file.exists()


def assert_soon(check: Any, timeout: float = 2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_gunicorns_access_line_is_json_with_the_request_id_and_no_header(capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import timedelta

    from gunicorn.config import Config

    from api.access_log import Logger

    cfg = Config()
    cfg.set("accesslog", "-")
    logger = Logger(cfg)
    response = SimpleNamespace(status="202 ACCEPTED", headers=[("X-Request-ID", "req-5")], sent=120,
                               response_length=120)
    request = SimpleNamespace(headers=[("AUTHORIZATION", "Bearer secret-token-value")])
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/orders", "QUERY_STRING": "", "RAW_URI": "/orders",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "HTTP_AUTHORIZATION": "Bearer secret"}
    logger.access(response, request, environ, timedelta(milliseconds=12))
    out = capsys.readouterr().out
    line = json.loads(out)
    assert (line["logger"], line["method"], line["path"], line["status"], line["request_id"]) == (
        "gunicorn.access", "POST", "/orders", 202, "req-5")
    assert line["duration_ms"] == 12.0 and "secret" not in out
