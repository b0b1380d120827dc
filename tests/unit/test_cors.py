"""CORS only for the configured storefront origins: a preflight from one is answered with the methods and headers
the API reads, its answers expose the headers a script needs; any other origin, or no CORS_ORIGINS at all, gets no
CORS header."""
from __future__ import annotations

from dataclasses import replace

from flask.testing import FlaskClient

from api.app import create_app
from api.cors import REQUEST_HEADERS
from services.runtime import Runtime
from tests.support import api_client

SHOP = "https://shop.example.com"
EVIL = "https://evil.example.net"
ASKED = "authorization, content-type, idempotency-key, prefer, x-request-id"


def client_with(runtime: Runtime, *origins: str) -> FlaskClient:
    return api_client(create_app(replace(runtime.settings, cors_origins=origins), runtime=runtime))


def preflight(client: FlaskClient, origin: str, path: str = "/orders", method: str = "POST") -> object:
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                         "Access-Control-Request-Headers": ASKED})


def cors_headers(response: object) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}  # type: ignore[attr-defined]


def test_a_preflight_from_a_listed_origin_allows_the_methods_and_headers_the_api_reads(runtime: Runtime) -> None:
    answer = preflight(client_with(runtime, SHOP, "https://m.example.com"), SHOP)
    assert answer.status_code == 200  # type: ignore[attr-defined]
    headers = cors_headers(answer)
    assert headers["Access-Control-Allow-Origin"] == SHOP
    assert {m.strip() for m in headers["Access-Control-Allow-Methods"].split(",")} == {"GET", "POST"}
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {h.lower() for h in REQUEST_HEADERS}
    assert "Access-Control-Allow-Credentials" not in headers
    assert "Origin" in answer.headers["Vary"]  # type: ignore[attr-defined]


def test_a_listed_origins_answers_carry_its_origin_and_expose_location_and_retry_after(runtime: Runtime) -> None:
    client = client_with(runtime, SHOP)
    placed = client.post("/orders", json={"customer_id": 1, "book_id": 1, "qty": 1}, headers={"Origin": SHOP})
    assert placed.status_code == 202
    assert placed.headers["Access-Control-Allow-Origin"] == SHOP
    exposed = {h.strip() for h in placed.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Location", "Retry-After", "X-Request-ID"} <= exposed
    problem = client.get("/orders/999999", headers={"Origin": SHOP})
    assert problem.status_code == 404 and problem.headers["Access-Control-Allow-Origin"] == SHOP


def test_other_origins_get_no_cors_header(runtime: Runtime) -> None:
    client = client_with(runtime, SHOP)
    assert cors_headers(preflight(client, EVIL)) == {}
    assert cors_headers(preflight(client, SHOP + ".evil.example.net")) == {}
    assert cors_headers(client.get("/books", headers={"Origin": EVIL})) == {}


def test_without_cors_origins_no_answer_carries_a_cors_header(runtime: Runtime) -> None:
    client = api_client(create_app(runtime.settings, runtime=runtime))
    assert runtime.settings.cors_origins == ()
    assert cors_headers(preflight(client, SHOP)) == {}
    assert cors_headers(client.get("/books", headers={"Origin": SHOP})) == {}


def test_support_routes_are_never_opened_to_another_origin(runtime: Runtime) -> None:
    client = client_with(runtime, SHOP)
    assert cors_headers(preflight(client, SHOP, "/admin/sagas", "GET")) == {}
    assert cors_headers(client.get("/metrics", headers={"Origin": SHOP})) == {}


def test_a_listed_origins_page_can_read_a_429s_retry_after(runtime: Runtime) -> None:
    settings = replace(runtime.settings, cors_origins=(SHOP,), rate_limit_orders_per_token="1/hour")
    client = api_client(create_app(settings, runtime=runtime))
    order = {"customer_id": 1, "book_id": 1, "qty": 1}
    assert client.post("/orders", json=order, headers={"Origin": SHOP}).status_code == 202
    refused = client.post("/orders", json=order, headers={"Origin": SHOP})
    assert refused.status_code == 429 and refused.headers["Access-Control-Allow-Origin"] == SHOP
    assert "Retry-After" in refused.headers["Access-Control-Expose-Headers"]
