"""No token, password or database URL ever leaves the API: not in a log line, not in an error body or header, not in
the OpenAPI document, whatever goes wrong (a bad token, the database and Redis down, a provider failing, an
unexpected error whose message carries a URL). And the sandbox's control endpoints are never served by the API."""
from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import services.orders
from api.app import create_app
from infra.config import Settings
from infra.logs import handler, redact
from infra.providers import Providers
from sandbox.app import create_app as create_sandbox
from services.runtime import Runtime
from services.steps import run_step
from tests.support import TEST_TOKENS, TOKENS_SETTING, api_client, free_port

DB_PASSWORD = "Db-Pa55word-f00d"
REDIS_PASSWORD = "Redis-Pa55word-cafe"
PROVIDER_KEY = "Pay-Api-Key-beef"
UNKNOWN_TOKEN = "not-one-of-ours-but-still-a-secret"
SECRETS = (DB_PASSWORD, REDIS_PASSWORD, PROVIDER_KEY, UNKNOWN_TOKEN, *TEST_TOKENS.values())
ORDER = {"customer_id": 7, "book_id": 1, "qty": 1}


class Captured:
    """Every log line, at every level, as the API and workers write them (JSON and text), while a test runs."""

    def __init__(self) -> None:
        self.streams = {fmt: io.StringIO() for fmt in ("json", "text")}

    @property
    def text(self) -> str:
        return "".join(stream.getvalue() for stream in self.streams.values())


@pytest.fixture
def logs() -> Iterator[Captured]:
    captured = Captured()
    root = logging.getLogger()
    handlers = [handler(fmt, stream) for fmt, stream in captured.streams.items()]
    level = root.level
    root.setLevel(logging.DEBUG)
    for made in handlers:
        root.addHandler(made)
    try:
        yield captured
    finally:
        for made in handlers:
            root.removeHandler(made)
        root.setLevel(level)


def assert_no_secret(where: str, text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{where} carries {leaked}:\n{text[:3000]}"


def seen(response: Any) -> str:
    """Everything a client sees of an answer: status, headers and body."""
    return f"{response.status} {dict(response.headers)} {response.get_data(as_text=True)}"


def unreachable_settings() -> Settings:
    """Settings whose database and Redis have passwords and cannot be reached (nothing listens on their ports)."""
    return Settings.from_env({
        "DATABASE_URL": f"postgresql://bookmarket:{DB_PASSWORD}@127.0.0.1:{free_port()}/bookmarket",
        "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
        "PAYMENT_URL": f"http://shop:{PROVIDER_KEY}@127.0.0.1:{free_port()}/payment",
        "BOOKMARKET_TOKENS": TOKENS_SETTING, "READINESS_TIMEOUT_S": "1", "PUBLISH_TIMEOUT_S": "0.5",
        "BREAKER_REDIS_TIMEOUT_S": "0.2", "RATE_LIMIT_TIMEOUT_S": "0.2",
    })


@pytest.fixture
def down_app() -> Iterator[Flask]:
    app = create_app(unreachable_settings())
    yield app
    app.extensions["bookmarket"].close()


def provoke(client: FlaskClient) -> list[Any]:
    """A bad token, no token, a wrong role, bad input, unknown paths and methods, and every storefront and support
    call while the dependencies are down."""
    bad = {"Authorization": f"Bearer {UNKNOWN_TOKEN}"}
    return [
        client.post("/orders", json=ORDER), client.post("/orders", json=ORDER, headers={"Idempotency-Key": "k-1"}),
        client.get("/orders/1"), client.post("/orders/1/cancel", json={}), client.get("/sagas/1"),
        client.get("/customers/7/orders"), client.get("/books"), client.get("/notifications"),
        client.get("/admin/sagas", headers={"Authorization": f"Bearer {TEST_TOKENS['support']}"}),
        client.post("/admin/sagas/1/retry", json={"reason": "x"}),
        client.post("/orders", json=ORDER, headers=bad), client.get("/orders/1", headers={"Authorization": ""}),
        client.post("/orders", json={"customer_id": "x"}),
        client.post("/orders", data="{", content_type="application/json"),
        client.get("/nowhere"), client.delete("/orders"), client.get("/readyz"), client.get("/health"),
        client.get("/metrics"),
    ]


def test_with_the_database_and_redis_down_no_answer_or_log_line_carries_a_secret(down_app: Flask,
                                                                                    logs: Captured) -> None:
    answers = provoke(api_client(down_app))
    assert {a.status_code for a in answers} <= {200, 401, 403, 404, 405, 409, 422, 400, 503}, \
        [(a.status_code, a.get_data(as_text=True)) for a in answers]
    assert any(a.status_code == 503 for a in answers)  # the outage was met, not avoided
    for answer in answers:
        assert_no_secret("an answer", seen(answer))
    assert "database unavailable" in logs.text  # the outage was logged...
    assert_no_secret("the log", logs.text)  # ...without the password


def test_the_openapi_document_and_docs_page_carry_no_secret(down_app: Flask) -> None:
    client = down_app.test_client()
    spec = client.get("/openapi.json")
    assert spec.status_code == 200 and spec.get_json()["paths"]
    assert_no_secret("the OpenAPI document", spec.get_data(as_text=True))
    assert "127.0.0.1" not in spec.get_data(as_text=True)  # no dependency's address either
    assert_no_secret("the docs page", seen(client.get("/docs")))


def test_an_unexpected_error_whose_message_carries_a_url_and_a_token_is_logged_redacted(
        runtime: Runtime, logs: Captured, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = unreachable_settings()

    def explode(*_: object) -> None:
        raise RuntimeError(f"cannot use {settings.database_url} nor {settings.redis_url} "
                           f"(Authorization: Bearer {TEST_TOKENS['storefront']})")

    monkeypatch.setattr(services.orders, "get_order", explode)
    answer = api_client(create_app(runtime.settings, runtime=runtime)).get("/orders/1")
    assert answer.status_code == 500
    assert_no_secret("the 500 answer", seen(answer))
    assert "RuntimeError: cannot use postgresql://bookmarket:***@127.0.0.1" in logs.text  # logged, with its trace
    assert_no_secret("the log", logs.text)


def test_a_failing_provider_with_credentials_in_its_url_leaks_them_nowhere(runtime: Runtime, logs: Captured) -> None:
    settings = unreachable_settings()
    runtime.providers = Providers.from_urls(settings.payment_url, settings.payment_url, settings.payment_url, 0.5)
    client = api_client(create_app(runtime.settings, runtime=runtime))
    placed = client.post("/orders", json=ORDER).get_json()
    assert run_step(runtime, placed["saga_id"], "pay") != "not claimed"
    saga = client.get(f"/sagas/{placed['saga_id']}")
    assert any(step["error"] for step in saga.get_json()["steps"]), saga.get_json()  # the failure is recorded
    assert_no_secret("the saga", seen(saga))
    assert_no_secret("the log", logs.text)


@pytest.mark.parametrize("line, secret", [
    ("postgresql+psycopg://bm:s3cret@db:5432/bm", "s3cret"),
    ("Error connecting to redis://:s3cret@cache:6379/0.", "s3cret"),
    ('{"headers": "Authorization: Bearer abcdefghijklmnopqr"}', "abcdefghijklmnopqr"),
    ("dbname=bm host=db password=s3cret user=bm", "s3cret"),
])
def test_redact_masks_url_passwords_bearer_tokens_and_password_keywords(line: str, secret: str) -> None:
    assert secret not in redact(line)
    assert "***" in redact(line)


def test_redact_leaves_ordinary_lines_alone() -> None:
    for line in ("order 4 placed: saga 9", "mail a@b.example", "redis+socket:///var/redis.sock", "GET /orders/3 200"):
        assert redact(line) == line


# --- the sandbox is not part of the API --------------------------------------------------------------------------
def test_the_api_serves_no_sandbox_route(runtime: Runtime) -> None:
    app = create_app(runtime.settings, runtime=runtime)
    sandbox_rules = {rule.rule for rule in create_sandbox().url_map.iter_rules()} - {"/health",
                                                                                      "/static/<path:filename>"}
    api_rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert sandbox_rules and not sandbox_rules & api_rules
    for endpoint, view in app.view_functions.items():
        assert not (view.__module__ or "").startswith("sandbox"), endpoint


SANDBOX_PATHS = [("POST", "/reset"), ("PUT", "/payment/behavior"), ("GET", "/payment/behavior"),
                 ("GET", "/payment/ledger"), ("POST", "/payment/charges"), ("POST", "/payment/refunds"),
                 ("POST", "/delivery/shipments"), ("POST", "/messaging/messages"), ("GET", "/sandbox/payment/ledger"),
                 ("POST", "/sandbox/reset")]


def test_sandbox_control_paths_are_not_found_on_the_api(runtime: Runtime) -> None:
    client = api_client(create_app(runtime.settings, runtime=runtime), "support")
    for method, path in SANDBOX_PATHS:
        answer = client.open(path, method=method, json={"fail_rate": 1})
        assert (answer.status_code, answer.mimetype) == (404, "application/problem+json"), (method, path)
