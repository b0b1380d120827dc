"""Probes and logs against real processes: /readyz while a throwaway redis-server or PostgreSQL is stopped or frozen
(answering within its bound) and after it is back; `bookmarket worker-alive` against a real worker; the JSON lines
of the API under gunicorn and of a worker, carrying the saga's fields and the caller's request id."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from flask.testing import FlaskClient

from api.app import create_app
from cli.main import gunicorn_api
from infra.config import Settings
from infra.migrate import upgrade
from tests.chaos.conftest import PostgresServer, running_postgres
from tests.integration.conftest import build_stack, stack_env
from tests.support import (
    ROOT,
    TOKENS_SETTING,
    RedisServer,
    bearer,
    free_port,
    spawn,
    start_worker,
    wait_http,
    wait_until,
)

pytestmark = pytest.mark.integration

BOUND_S = 1.0  # READINESS_TIMEOUT_S in these tests
SLACK_S = 0.6  # what an answer may take beyond the bound on a busy machine


# --- readiness -----------------------------------------------------------------------------------------------------
def probe_client(database_url: str, redis_url: str) -> FlaskClient:
    settings = Settings.from_env({"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                                  "BOOKMARKET_TOKENS": TOKENS_SETTING, "READINESS_TIMEOUT_S": str(BOUND_S)})
    return create_app(settings).test_client()


def readyz(client: FlaskClient) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    response = client.get("/readyz")
    return response.status_code, response.get_json(), time.monotonic() - started


def assert_not_ready(client: FlaskClient, down: str, up: str) -> dict[str, Any]:
    status, body, took = readyz(client)
    assert status == 503, body
    assert took < BOUND_S + SLACK_S, f"/readyz took {took:.2f}s"
    assert body["title"] == "Service Unavailable" and down in body["detail"] and up not in body["detail"], body
    assert body["checks"][up] == "ok" and body["checks"][down] != "ok", body
    return body


def wait_ready(client: FlaskClient) -> None:
    wait_until(lambda: readyz(client)[0] == 200, 20, 0.2, "/readyz to answer 200")
    status, body, took = readyz(client)
    assert (status, body) == (200, {"status": "ok", "checks": {"database": "ok", "broker": "ok"}})
    assert took < BOUND_S


def test_readiness_fails_within_its_bound_while_redis_is_stopped_or_frozen_and_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        client = probe_client(f"sqlite:///{tmp_path / 'probe.db'}", server.url)
        wait_ready(client)
        server.kill()
        body = assert_not_ready(client, "broker", "database")
        assert body["checks"]["broker"].startswith("error")
        assert client.get("/healthz").status_code == 200  # liveness checks no dependency
        server.start()
        wait_ready(client)
        server.freeze()
        body = assert_not_ready(client, "broker", "database")
        assert body["checks"]["broker"].startswith("timeout")
        assert_not_ready(client, "broker", "database")  # still bounded while the first check hangs
        server.thaw()
        wait_ready(client)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def throwaway_postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def postgres_processes(server: PostgresServer) -> list[psutil.Process]:
    postmaster = psutil.Process(int((server.data / "postmaster.pid").read_text().split()[0]))
    return [postmaster, *postmaster.children(recursive=True)]


def test_readiness_fails_within_its_bound_while_postgres_is_stopped_or_frozen_and_recovers(
    throwaway_postgres: PostgresServer, redis_server: str,
) -> None:
    client = probe_client(throwaway_postgres.url(), redis_server)
    wait_ready(client)
    throwaway_postgres.stop("immediate")
    try:
        body = assert_not_ready(client, "database", "broker")
        assert body["checks"]["database"].startswith("error")
    finally:
        throwaway_postgres.start()
    wait_ready(client)
    frozen = postgres_processes(throwaway_postgres)
    for process in frozen:
        process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(0.2)
        body = assert_not_ready(client, "database", "broker")
        assert body["checks"]["database"].startswith("timeout")
        assert_not_ready(client, "database", "broker")
    finally:
        for process in frozen:
            process.send_signal(signal.SIGCONT)
    wait_ready(client)


# --- worker liveness -----------------------------------------------------------------------------------------------
def worker_alive(env: dict[str, str], max_age_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", "worker-alive", "--max-age", f"{max_age_s:g}"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)


def test_worker_alive_succeeds_while_a_real_worker_runs_and_fails_once_it_hangs_or_stops(
    tmp_path: Path, redis_server: str,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'bookmarket.db'}"
    upgrade(database_url)
    heartbeat = tmp_path / "worker.heartbeat"
    env = {**stack_env(database_url, "http://127.0.0.1:9", f"saga-alive-{uuid.uuid4().hex[:8]}"),
           "WORKER_HEARTBEAT_FILE": str(heartbeat), "WORKER_HEARTBEAT_S": "0.3"}
    assert worker_alive(env, 2).returncode == 1  # no worker yet: no file
    worker = start_worker(env, tmp_path / "worker.log", threads=4)
    try:
        wait_until(heartbeat.exists, 10, 0.1, "the heartbeat file")
        done = worker_alive(env, 2)
        assert done.returncode == 0, done.stderr
        worker.proc.send_signal(signal.SIGSTOP)  # a hung worker: its heartbeat goes stale
        try:
            done = wait_until(lambda: (r := worker_alive(env, 1)).returncode == 1 and r, 10, 0.3, "a stale heartbeat")
            assert "old" in done.stderr
        finally:
            worker.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: worker_alive(env, 1).returncode == 0, 10, 0.3, "the heartbeat to resume")
    finally:
        assert worker.stop() == 0, worker.log_tail()
    done = worker_alive(env, 60)
    assert done.returncode == 1 and "does not exist" in done.stderr  # stopped: the file is gone at once


def test_a_worker_keeps_its_heartbeat_while_the_broker_is_down_and_reconnecting(tmp_path: Path) -> None:
    """A Redis outage is no reason to restart workers: the consumer is reconnecting, and the sweeper still runs."""
    server = RedisServer(tmp_path)
    server.start()
    database_url = f"sqlite:///{tmp_path / 'bookmarket.db'}"
    upgrade(database_url)
    env = {**stack_env(database_url, "http://127.0.0.1:9", f"saga-alive-{uuid.uuid4().hex[:8]}"),
           "REDIS_URL": server.url, "WORKER_HEARTBEAT_FILE": str(tmp_path / "hb"), "WORKER_HEARTBEAT_S": "0.3"}
    worker = start_worker(env, tmp_path / "worker.log", threads=4)
    try:
        server.kill()
        for _ in range(4):
            time.sleep(1)
            done = worker_alive(env, 1)
            assert done.returncode == 0, f"{done.stderr}\n{worker.log_tail()}"
        server.start()
    finally:
        worker.stop()
        server.stop()


# --- logs ----------------------------------------------------------------------------------------------------------
def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a process's output, each parsed as JSON (a line that is not JSON fails the test)."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line in {path.name}: {line!r}")
    return parsed


def test_api_and_worker_log_json_lines_and_the_request_id_travels_to_the_workers_lines_of_the_saga(
    tmp_path: Path, redis_server: str,
) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    # INLINE_STEPS=0: every step is its own message, so the request id crosses the broker at each hop.
    with build_stack(tmp_path, "sqlite", "", INLINE_STEPS="0") as stack:
        port = free_port()
        api_log = tmp_path / "api.log"
        api = spawn(gunicorn_api("127.0.0.1", port, workers=1, threads=4), {**stack.env, "LOG_FORMAT": "json"},
                    api_log)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", api)
            answer = requests.post(f"http://127.0.0.1:{port}/orders", json={"customer_id": 3, "book_id": 1, "qty": 1},
                                   headers={**bearer(), "X-Request-ID": request_id}, timeout=10)
            assert answer.status_code == 202, answer.text
            assert answer.headers["X-Request-ID"] == request_id
            order_id, saga_id = answer.json()["id"], answer.json()["saga_id"]
            assert stack.wait_saga(saga_id)["status"] == "COMPLETED"
            made = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).headers["X-Request-ID"]
            assert made and made != request_id  # none given: one is made
        finally:
            api.send_signal(signal.SIGTERM)
            api.wait(timeout=15)
        worker_log = stack.worker.log
        assert worker_log is not None
        wait_until(lambda: '"notify"' in worker_log.read_text(), 10, 0.2, "the worker's line of the last step")
    api_lines = json_lines(api_log)
    assert bearer()["Authorization"].split()[1] not in api_log.read_text()
    access = [line for line in api_lines if line["logger"] == "gunicorn.access" and line.get("path") == "/orders"]
    assert [(a["method"], a["status"], a["request_id"]) for a in access] == [("POST", 202, request_id)]
    placed = [line for line in api_lines if line.get("request_id") == request_id and line is not access[0]]
    assert [line["logger"] for line in placed] == ["services.orders"], placed  # "order 1 placed: saga 1"
    assert (placed[0]["order_id"], placed[0]["saga_id"]) == (order_id, saga_id)
    saga_lines = [line for line in json_lines(worker_log) if line.get("saga_id") == saga_id]
    assert {line["step"] for line in saga_lines} >= {"pay", "ship", "notify"}, saga_lines
    for line in saga_lines:
        assert line["order_id"] == order_id and isinstance(line["attempt"], int), line
        assert line["request_id"] == request_id, line
