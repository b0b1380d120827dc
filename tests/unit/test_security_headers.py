"""Every answer says: no sniffing, no framing, no referrer; data answers allow no content at all."""
from __future__ import annotations

import io

from flask.testing import FlaskClient

from api.app import create_app
from api.console import CSP as CONSOLE_CSP
from api.docs import CSP as DOCS_CSP
from api.security_headers import DATA_CSP
from services.runtime import Runtime
from tests.support import api_client


def client_of(runtime: Runtime) -> FlaskClient:
    return api_client(create_app(runtime.settings, runtime=runtime))


def assert_secured(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"


def test_json_problem_and_text_answers_carry_the_headers_and_a_csp_that_allows_nothing(runtime: Runtime) -> None:
    client = client_of(runtime)
    for response in (client.get("/books"), client.get("/orders/999"), client.post("/orders", json={}),
                     create_app(runtime.settings, runtime=runtime).test_client().get("/books"),
                     client.get("/metrics")):
        assert_secured(response)
        assert response.headers["Content-Security-Policy"] == DATA_CSP, response.status


def test_pages_keep_their_own_policy(runtime: Runtime) -> None:
    client = client_of(runtime)
    console = client.get("/console/")
    assert_secured(console)
    assert console.headers["Content-Security-Policy"] == CONSOLE_CSP
    docs = client.get("/docs")
    assert_secured(docs)
    assert docs.headers["Content-Security-Policy"] == DOCS_CSP


def test_a_body_over_the_limit_answers_413_before_it_is_read(runtime: Runtime) -> None:
    client = client_of(runtime)
    response = client.post("/orders", data=b"{" + b" " * runtime.settings.max_body_bytes + b"}",
                           content_type="application/json")
    assert response.status_code == 413 and response.mimetype == "application/problem+json"
    body = io.BytesIO(b"{}")  # says 60 MB and holds two bytes: answered from the header, the body never read
    response = client.post("/orders", input_stream=body, content_type="application/json",
                           environ_overrides={"CONTENT_LENGTH": str(60 * 1024 * 1024)})
    assert response.status_code == 413 and response.get_json()["status"] == 413
    assert body.tell() == 0


def test_a_body_that_is_not_json_answers_415(runtime: Runtime) -> None:
    client = client_of(runtime)
    response = client.post("/orders", data="customer_id=1", content_type="text/plain")
    assert response.status_code == 415 and response.mimetype == "application/problem+json"
    assert "must be JSON" in response.get_json()["detail"]
    assert client.post("/orders", json={"customer_id": 1, "book_id": 1, "qty": 1}).status_code == 202
    assert client.post("/orders/999/cancel").status_code == 404  # no body: no content type needed
