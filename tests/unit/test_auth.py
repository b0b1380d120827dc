"""Access control of the HTTP API in process (SQLite, a recording publisher): bearer tokens, roles, open probes,
and the role check as the /admin blueprint will use it."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask.views import MethodView
from flask_smorest import Blueprint

from api.app import create_app
from api.auth import AccessNotDeclared, NoTokens, current_principal, protect, public, requires
from api.problems import ProblemApi
from infra.tokens import parse_tokens
from services.runtime import Runtime
from tests.support import TEST_TOKENS, bearer
from tests.unit.fakes import RecordingPublisher

PROBLEM = "application/problem+json"
ORDER = {"customer_id": 7, "book_id": 2, "qty": 1}
CHALLENGE = 'Bearer realm="bookmarket"'


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    """The API with no token of its own: each test says what it sends."""
    return create_app(runtime.settings, runtime=runtime).test_client()


def problem_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body: dict[str, Any] = response.get_json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"] == "about:blank"
    return body


def orders_of(client: FlaskClient, customer_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/customers/{customer_id}/orders", headers=bearer("support"))
    assert response.status_code == 200
    orders: list[dict[str, Any]] = response.get_json()
    return orders


# --- 401 -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/orders"), ("GET", "/orders/1"), ("POST", "/orders/1/cancel"), ("GET", "/sagas/1"), ("GET", "/books"),
    ("GET", "/customers/7/orders"), ("GET", "/notifications"), ("HEAD", "/books"),
])
def test_every_order_endpoint_without_a_token_answers_401_with_a_bearer_challenge(
        client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method, json=ORDER if method == "POST" else None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    if method != "HEAD":
        assert "Authorization: Bearer" in problem_of(response, 401)["detail"]


@pytest.mark.parametrize("header", ["Bearer not-a-configured-token", "Bearer " + TEST_TOKENS["storefront"] + "x",
                                    "Bearer " + TEST_TOKENS["storefront"][:-1]])
def test_an_unknown_token_answers_401_invalid_token_and_the_token_is_nowhere_in_the_answer_or_the_log(
        client: FlaskClient, caplog: pytest.LogCaptureFixture, header: str) -> None:
    caplog.set_level(logging.DEBUG)
    response = client.get("/books", headers={"Authorization": header})
    body = problem_of(response, 401)
    assert response.headers["WWW-Authenticate"] == CHALLENGE + ', error="invalid_token"'
    token = header.removeprefix("Bearer ")
    assert token not in response.get_data(as_text=True) and token not in str(response.headers)
    assert token not in caplog.text
    assert body["detail"] == "the bearer token is not valid"


@pytest.mark.parametrize("header", [f"Basic {TEST_TOKENS['storefront']}", TEST_TOKENS["storefront"], "Bearer ",
                                    "Bearer"])
def test_anything_but_a_bearer_token_answers_401(client: FlaskClient, header: str) -> None:
    response = client.get("/books", headers={"Authorization": header})
    problem_of(response, 401)
    assert response.headers["WWW-Authenticate"] == CHALLENGE


def test_the_scheme_is_case_insensitive(client: FlaskClient) -> None:
    assert client.get("/books", headers={"Authorization": f"bearer {TEST_TOKENS['storefront']}"}).status_code == 200


def test_a_post_without_a_token_is_refused_before_its_body_is_read(client: FlaskClient,
                                                                   runtime: Runtime) -> None:
    response = client.post("/orders", data="{not json", content_type="application/json")
    problem_of(response, 401)
    assert isinstance(runtime.publisher, RecordingPublisher) and runtime.publisher.sent == []


# --- roles ---------------------------------------------------------------------------------------------------------


def test_a_viewer_may_not_place_an_order_and_nothing_is_created(client: FlaskClient, runtime: Runtime) -> None:
    response = client.post("/orders", json=ORDER, headers=bearer("viewer"))
    body = problem_of(response, 403)
    assert body["detail"] == "this needs the storefront role; the token's role is viewer"
    assert response.headers["WWW-Authenticate"] == CHALLENGE + ', error="insufficient_scope", scope="storefront"'
    assert orders_of(client, ORDER["customer_id"]) == []
    assert isinstance(runtime.publisher, RecordingPublisher) and runtime.publisher.sent == []


def test_a_viewer_may_not_cancel_or_read_orders(client: FlaskClient) -> None:
    placed = client.post("/orders", json=ORDER, headers=bearer("storefront")).get_json()
    problem_of(client.post(f"/orders/{placed['id']}/cancel", json={}, headers=bearer("viewer")), 403)
    problem_of(client.get(f"/orders/{placed['id']}", headers=bearer("viewer")), 403)
    assert client.get(f"/orders/{placed['id']}", headers=bearer("storefront")).get_json()["status"] == "PENDING"


@pytest.mark.parametrize("role", ["storefront", "support"])
def test_storefront_and_support_place_read_and_cancel_orders(client: FlaskClient, role: str) -> None:
    response = client.post("/orders", json=ORDER, headers=bearer(role))
    assert response.status_code == 202, response.get_json()
    order_id = response.get_json()["id"]
    assert client.get(f"/orders/{order_id}", headers=bearer(role)).status_code == 200
    assert client.post(f"/orders/{order_id}/cancel", json={}, headers=bearer(role)).status_code == 202
    assert client.get("/books", headers=bearer(role)).status_code == 200


@pytest.mark.parametrize("path", ["/health", "/health/live", "/healthz", "/readyz", "/openapi.json", "/docs",
                                  "/console", "/console/static/console.js"])
def test_health_probes_and_the_api_documentation_need_no_token(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (200, 503)  # /health, /readyz: 503, no broker here
    assert response.status_code == 503 or response.mimetype != PROBLEM
    assert "WWW-Authenticate" not in response.headers


def test_a_preflight_options_request_needs_no_token(client: FlaskClient) -> None:
    response = client.options("/orders")
    assert response.status_code == 200 and "POST" in response.headers["Allow"]


def test_an_unknown_path_still_answers_404_and_a_wrong_method_405(client: FlaskClient) -> None:
    problem_of(client.get("/nowhere"), 404)
    assert client.delete("/books").status_code == 405


# --- the role check as the /admin blueprint will declare it -------------------------------------------------------


def admin_app(tokens: str) -> Flask:
    """A small API with an /admin-like blueprint: reads for viewer, actions for support; the views answer who
    called."""
    app = Flask("admin-test")
    app.config.update(API_TITLE="t", API_VERSION="1", OPENAPI_VERSION="3.0.3", OPENAPI_URL_PREFIX="/")
    api = ProblemApi(app)
    blp = Blueprint("admin", __name__)

    @blp.route("/admin/sagas")
    class Sagas(MethodView):
        @requires("viewer")
        def get(self) -> Any:
            """Sagas parked for support.

            Oldest first.
            """
            principal = current_principal()
            assert principal is not None
            return {"name": principal.name, "role": principal.role}

        @requires("support")
        def post(self) -> Any:
            principal = current_principal()
            assert principal is not None
            return {"name": principal.name, "role": principal.role}

    @blp.route("/admin/ping")
    class Ping(MethodView):
        @public
        def get(self) -> Any:
            return {"principal": current_principal()}

    api.register_blueprint(blp)
    protect(app, api, parse_tokens(tokens, "BOOKMARKET_TOKENS"))
    return app


ADMIN_TOKENS = ("viewer:eve=viewer-token-0123456789,support:alice=support-token-0123456789,"
                "storefront=storefront-token-0123456789")


@pytest.mark.parametrize(("token", "get", "post"), [
    ("viewer-token-0123456789", 200, 403),
    ("support-token-0123456789", 200, 200),
    ("storefront-token-0123456789", 403, 403),
])
def test_admin_reads_take_viewer_or_support_and_admin_actions_only_support(token: str, get: int, post: int) -> None:
    client = admin_app(ADMIN_TOKENS).test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/admin/sagas", headers=headers).status_code == get
    assert client.post("/admin/sagas", headers=headers).status_code == post


def test_views_see_the_callers_name_and_role_and_none_on_an_open_view() -> None:
    client = admin_app(ADMIN_TOKENS).test_client()
    assert client.post("/admin/sagas", headers={"Authorization": "Bearer support-token-0123456789"}).get_json() == {
        "name": "alice", "role": "support"}
    assert client.get("/admin/sagas", headers={"Authorization": "Bearer viewer-token-0123456789"}).get_json() == {
        "name": "eve", "role": "viewer"}
    assert client.get("/admin/ping").get_json() == {"principal": None}


def test_a_route_that_declares_no_access_stops_the_app_at_start() -> None:
    app = Flask("undeclared")
    app.config.update(API_TITLE="t", API_VERSION="1", OPENAPI_VERSION="3.0.3")
    api = ProblemApi(app)
    blp = Blueprint("admin", __name__)

    @blp.route("/admin/forgotten")
    class Forgotten(MethodView):
        def post(self) -> Any:
            return {}

    api.register_blueprint(blp)
    with pytest.raises(AccessNotDeclared, match=r"POST /admin/forgotten declares no access"):
        protect(app, api, parse_tokens(ADMIN_TOKENS, "BOOKMARKET_TOKENS"))


def test_an_unknown_role_is_refused_when_a_view_declares_it() -> None:
    with pytest.raises(ValueError, match="unknown role 'admin'"):
        requires("admin")


def test_the_api_refuses_to_start_without_a_token(runtime: Runtime) -> None:
    settings = dataclasses.replace(runtime.settings, api_tokens=parse_tokens("", "BOOKMARKET_TOKENS"))
    with pytest.raises(NoTokens, match=r"BOOKMARKET_TOKENS is not set.*bookmarket up"):
        create_app(settings, runtime=runtime)


# --- the OpenAPI document ------------------------------------------------------------------------------------------


def test_openapi_declares_the_bearer_scheme_and_each_operations_roles_and_401_403(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["bearerAuth"][
            "description"]}
    operations = {(method.upper(), path): op for path, item in spec["paths"].items()
                  for method, op in item.items() if method != "parameters"}
    assert len(operations) == 22  # with GET /admin/whoami and /admin/definitions
    for (method, path), op in operations.items():
        if path.startswith("/health") or path in ("/readyz", "/metrics"):  # /metrics: open unless METRICS_ROLE
            assert "security" not in op and "x-roles" not in op, path
            continue
        assert op["security"] == [{"bearerAuth": []}], (method, path)
        roles = (["support", "viewer"] if method == "GET" else ["support"]) if path.startswith("/admin") else [
            "storefront", "support"]
        assert op["x-roles"] == roles, (method, path)
        assert " or ".join(roles) in op["description"]
        assert op["responses"]["401"] == {"$ref": "#/components/responses/BEARER_UNAUTHORIZED"}
        assert op["responses"]["403"] == {"$ref": "#/components/responses/BEARER_FORBIDDEN"}
    unauthorized = spec["components"]["responses"]["BEARER_UNAUTHORIZED"]
    assert "WWW-Authenticate" in unauthorized["headers"]
    assert unauthorized["content"][PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}


def test_openapi_keeps_each_operations_own_summary_and_description_before_its_roles() -> None:
    spec = admin_app(ADMIN_TOKENS).test_client().get("/openapi.json").get_json()
    read, action = spec["paths"]["/admin/sagas"]["get"], spec["paths"]["/admin/sagas"]["post"]
    assert read["summary"] == "Sagas parked for support."
    assert read["description"] == "Oldest first.\n\nNeeds a bearer token of role support or viewer."
    assert (read["x-roles"], action["x-roles"]) == (["support", "viewer"], ["support"])
    assert action["description"] == "Needs a bearer token of role support."
