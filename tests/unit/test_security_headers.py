"""Every answer says: no sniffing, no framing, no referrer; data answers allow no content at all."""
from __future__ import annotations

from flask.testing import FlaskClient

from api.app import create_app
from api.console import CSP as CONSOLE_CSP
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
    assert "Content-Security-Policy" not in docs.headers  # Swagger UI's page runs its own inline script
