"""Secrets never leak from real processes: the API under gunicorn and a Celery worker, both writing JSON lines, on a
PostgreSQL URL and a Redis URL that hold passwords (the Redis really asks for one), a provider URL holding a key
and bearer tokens; then a bad token, a payment provider that is down, a declined delivery, and a second API whose
database is down. No log line, answer or OpenAPI document carries any of them."""
from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import redis
import requests
import sqlalchemy as sa

from cli.main import gunicorn_api
from infra.migrate import upgrade
from tests.conftest import create_pg_database
from tests.integration.conftest import forget_queue, stack_env
from tests.support import (
    TEST_TOKENS,
    TOKENS_SETTING,
    ProcessHandle,
    Sandbox,
    free_port,
    spawn,
    start_sandbox,
    start_worker,
    wait_http,
    wait_until,
)

pytestmark = pytest.mark.integration

PG_PASSWORD = f"Pg-Pa55-{uuid.uuid4().hex[:8]}"
REDIS_PASSWORD = f"Redis-Pa55-{uuid.uuid4().hex[:8]}"
PROVIDER_KEY = f"Api-Key-{uuid.uuid4().hex[:8]}"
UNKNOWN_TOKEN = f"unknown-token-{uuid.uuid4().hex}"
ORDER = {"customer_id": 4, "book_id": 1, "qty": 1}


def secured_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway redis-server that refuses clients without REDIS_PASSWORD; its URL (with the password)."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmp), "--requirepass", REDIS_PASSWORD]
    proc = subprocess.Popen(argv, stdout=(tmp / "redis.log").open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    wait_until(answers, 15, 0.05, "the password-protected redis-server")
    with pytest.raises(redis.AuthenticationError):  # it really asks for the password
        redis.Redis(port=port, socket_connect_timeout=0.5).ping()
    return proc, url


def with_password(url: str) -> str:
    return sa.engine.make_url(url).set(password=PG_PASSWORD).render_as_string(hide_password=False)


def start_api(env: dict[str, str], log: Path) -> ProcessHandle:
    port = free_port()
    proc = spawn(gunicorn_api("127.0.0.1", port, workers=1, threads=4), env, log)
    handle = ProcessHandle(proc, f"http://127.0.0.1:{port}", log)
    wait_http(f"{handle.url}/healthz", proc)
    return handle


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_secret_in_any_log_line_answer_or_openapi_document_of_real_processes(
        tmp_path: Path, postgres_server: str) -> None:
    redis_proc, redis_url = secured_redis(tmp_path)
    database_url, drop = create_pg_database(postgres_server)
    database_url = with_password(database_url)
    upgrade(database_url)
    sandbox = start_sandbox(free_port(), tmp_path)
    keyed = sandbox.url.replace("http://", f"http://shop:{PROVIDER_KEY}@")
    env = {**stack_env(database_url, keyed, f"saga-test-{uuid.uuid4().hex[:8]}"), "REDIS_URL": redis_url,
           "LOG_FORMAT": "json", "BOOKMARKET_TOKENS": TOKENS_SETTING, "PROVIDER_TIMEOUT_S": "1"}
    down_env = {**env, "DATABASE_URL": with_password(f"postgresql://bookmarket@127.0.0.1:{free_port()}/bookmarket"),
                "READINESS_TIMEOUT_S": "1"}
    handles: list[ProcessHandle] = []
    seen: list[str] = []
    try:
        handles.append(start_worker(env, tmp_path / "worker.log"))
        api, down = start_api(env, tmp_path / "api.log"), start_api(down_env, tmp_path / "api-down.log")
        handles += [api, down]
        shop = Sandbox(sandbox.url)

        def call(method: str, url: str, **kwargs: object) -> requests.Response:
            answer = requests.request(method, url, timeout=15, **kwargs)  # type: ignore[arg-type]
            seen.append(f"{method} {url} -> {answer.status_code} {dict(answer.headers)} {answer.text}")
            return answer

        def order_to_its_end() -> int:
            saga_id = int(call("POST", f"{api.url}/orders", json=ORDER,
                               headers=auth(TEST_TOKENS["storefront"])).json()["saga_id"])
            wait_until(lambda: call("GET", f"{api.url}/sagas/{saga_id}", headers=auth(TEST_TOKENS["support"]))
                       .json()["status"] in ("COMPLETED", "COMPENSATED", "FAILED"), 60, 0.3, f"saga {saga_id} to end")
            return saga_id

        order_to_its_end()
        shop.behave("payment", down=True)
        failing = order_to_its_end()
        shop.reset()
        shop.behave("delivery", reject=True)
        order_to_its_end()
        assert call("POST", f"{api.url}/orders", json=ORDER, headers=auth(UNKNOWN_TOKEN)).status_code == 401
        assert call("GET", f"{api.url}/admin/sagas", headers=auth(TEST_TOKENS["storefront"])).status_code == 403
        call("GET", f"{api.url}/admin/sagas/{failing}", headers=auth(TEST_TOKENS["support"]))
        call("GET", f"{api.url}/readyz")
        call("GET", f"{api.url}/metrics")
        assert call("GET", f"{api.url}/openapi.json").status_code == 200
        refused_down = call("POST", f"{down.url}/orders", json=ORDER, headers=auth(TEST_TOKENS["storefront"]))
        assert refused_down.status_code == 503
        assert call("GET", f"{down.url}/readyz").status_code == 503
        call("GET", f"{down.url}/orders/1", headers=auth(TEST_TOKENS["storefront"]))
    finally:
        for handle in handles:
            handle.stop(signal.SIGTERM)
        sandbox.stop()
        forget_queue(redis_url, env["SAGA_QUEUE"])
        redis_proc.kill()
        redis_proc.wait()
        drop()
    logs = {log.name: log.read_text(errors="replace") for log in tmp_path.glob("*.log") if log.name != "redis.log"}
    assert "database unavailable" in logs["api-down.log"]  # the outage was met and logged
    assert any("provider payment failed" in text for text in logs.values())  # so was the provider's
    secrets = (PG_PASSWORD, REDIS_PASSWORD, PROVIDER_KEY, UNKNOWN_TOKEN, *TEST_TOKENS.values())
    for where, text in {**logs, "answers": "\n".join(seen)}.items():
        leaked = [secret for secret in secrets if secret in text]
        assert not leaked, f"{where} carries {leaked}"
