"""The OpenAPI document against the API's real answers: every error is problem+json with the Problem schema, every
header the API reads or sends is declared, and the statuses the app answers around its views are documented."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from flask.testing import FlaskClient

from api.app import create_app
from api.paging import MAX_PAGE
from domain.model import OrderStatus
from services.runtime import Runtime
from tests.support import api_client
from tests.unit.test_prefer_wait import ORDER, ended_as

PROBLEM = "application/problem+json"
HUGE = "99999999999999999999"


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return api_client(create_app(runtime.settings, runtime=runtime))


@pytest.fixture
def spec(client: FlaskClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").get_json()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield method.upper(), path, operation


def resolved(spec: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in response:
        found: dict[str, Any] = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
        return found
    return response


def assert_problem_matches_the_document(spec: dict[str, Any], method: str, path: str, response: Any) -> None:
    """The answer's status is documented for the operation, as problem+json, and its body fits the Problem schema."""
    operation = spec["paths"][path][method.lower()]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{method} {path} answered {response.status_code}, which is not documented"
    assert response.mimetype == PROBLEM
    assert list(resolved(spec, documented)["content"]) == [PROBLEM]
    schema = {"$ref": "#/components/schemas/Problem", "components": nullable_as_json_schema(spec["components"])}
    jsonschema.validate(response.get_json(), schema)


def nullable_as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema says it: null among the types."""
    if isinstance(node, list):
        return [nullable_as_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    converted = {k: nullable_as_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") and "type" in node:
        converted["type"] = [node["type"], "null"]
    return converted


def test_every_error_answer_is_documented_as_problem_json_with_the_problem_schema(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        for code, response in operation["responses"].items():
            if int(code) >= 400 and not (path == "/health" and code == "503"):  # /health: its report, as JSON
                content = resolved(spec, response)["content"]
                assert content == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}, (method, path, code)


def test_no_code_and_message_error_schema_is_documented_anywhere(spec: dict[str, Any]) -> None:
    assert "Error" not in spec["components"]["schemas"]
    for name, schema in spec["components"]["schemas"].items():
        assert not {"code", "message"} <= set(schema.get("properties", {})), name
    assert all("default" not in op["responses"] for _m, _p, op in operations(spec))


def test_the_problem_schema_requires_the_four_members_every_problem_has(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert sorted(problem["required"]) == ["detail", "status", "title", "type"]
    assert {"errors", "order", "saga_id", "state", "checks"} <= set(problem["properties"])


def test_post_orders_declares_idempotency_key_prefer_and_the_headers_it_answers(spec: dict[str, Any]) -> None:
    post = spec["paths"]["/orders"]["post"]
    headers = {p["name"]: p for p in post["parameters"] if p["in"] == "header"}
    assert {"Idempotency-Key", "Prefer", "X-Request-ID"} <= set(headers)
    assert not headers["Idempotency-Key"]["required"] and not headers["Prefer"]["required"]
    assert headers["Idempotency-Key"]["schema"]["maxLength"] == 200  # a longer key answers 422
    assert {"Location", "Idempotent-Replayed", "Preference-Applied"} <= set(post["responses"]["202"]["headers"])
    assert post["responses"]["202"]["headers"]["Location"]["required"] is True
    assert post["responses"]["201"]["headers"]["Preference-Applied"]["required"] is True
    assert {"200", "201", "202", "400", "401", "402", "403", "409", "413", "415", "422", "429", "503"} == set(
        post["responses"])
    assert post["responses"]["503"]["headers"]["Retry-After"]["required"] is True
    assert post["responses"]["429"]["headers"]["Retry-After"]["required"] is True


def test_every_operation_declares_x_request_id_and_every_answer_documents_it(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        assert "X-Request-ID" in [p["name"] for p in operation["parameters"] if p["in"] == "header"], (method, path)
        for code, response in operation["responses"].items():
            assert "X-Request-ID" in resolved(spec, response)["headers"], (method, path, code)


def test_operations_document_the_statuses_the_app_answers_around_their_views(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        codes = set(operation["responses"])
        assert {"413", "415"} <= codes, (method, path)  # a body too large or not JSON, sent with any request
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= codes, (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)
        if "security" in operation:
            assert {"401", "403"} <= codes, (method, path)
        if path not in ("/health/live", "/healthz"):
            assert "503" in codes, (method, path)
        if "503" in codes and path not in ("/health", "/readyz"):
            assert "Retry-After" in operation["responses"]["503"]["headers"], (method, path)


def test_the_security_scheme_is_bearer_and_each_protected_operation_names_its_roles(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for role in ("storefront", "support", "viewer"):
        assert role in scheme["description"]
    for method, path, operation in operations(spec):
        assert ("security" in operation) == ("x-roles" in operation), (method, path)


def test_real_errors_match_their_documented_status_and_the_problem_schema(spec: dict[str, Any],
                                                                          client: FlaskClient) -> None:
    anonymous = client.application.test_client()
    cases = [
        ("GET", "/orders/{order_id}", client.get("/orders/999")),
        ("GET", "/orders/{order_id}", client.get(f"/orders/{HUGE}")),  # beyond the database's integers: no route
        ("GET", "/sagas/{saga_id}", client.get("/sagas/2147483648")),
        ("GET", "/orders/{order_id}", anonymous.get("/orders/1")),
        ("GET", "/admin/audit", client.get("/admin/audit")),  # a storefront token: 403
        ("POST", "/orders", client.post("/orders", json={"customer_id": "x"})),
        ("POST", "/orders", client.post("/orders", data="{", content_type="application/json")),
        ("POST", "/orders", client.post("/orders", data="customer_id=1", content_type="text/plain")),
        ("POST", "/orders", client.post("/orders", json={"customer_id": 1, "book_id": 1, "qty": 1},
                                        headers={"Idempotency-Key": "k" * 201})),
        ("GET", "/customers/{customer_id}/orders", client.get(f"/customers/1/orders?page={HUGE}")),
        ("GET", "/notifications", client.get(f"/notifications?customer_id={HUGE}")),
        ("GET", "/books", client.get("/books", data="not json", content_type="text/plain")),
    ]
    for method, path, response in cases:
        assert_problem_matches_the_document(spec, method, path, response)


def test_a_page_past_the_last_one_the_api_serves_is_a_422_not_a_database_error(spec: dict[str, Any],
                                                                                client: FlaskClient) -> None:
    response = client.get(f"/customers/1/orders?page={MAX_PAGE + 1}")
    assert response.status_code == 422 and "page" in response.get_json()["errors"]
    assert client.get(f"/customers/1/orders?page={MAX_PAGE}").status_code == 200
    page = next(p for p in spec["paths"]["/admin/sagas"]["get"]["parameters"] if p["name"] == "page")
    assert page["schema"]["maximum"] == MAX_PAGE


def test_a_405_names_the_allowed_methods(client: FlaskClient) -> None:
    response = client.delete("/orders")
    assert response.status_code == 405 and response.mimetype == PROBLEM
    assert {m.strip() for m in response.headers["Allow"].split(",")} >= {"POST"}


def test_the_problems_with_extension_members_match_the_problem_schema(spec: dict[str, Any], runtime: Runtime,
                                                                      client: FlaskClient) -> None:
    ended_as(runtime, client, OrderStatus.REJECTED)
    rejected = client.post("/orders", json=ORDER, headers={"Idempotency-Key": "k1", "Prefer": "wait=1"})
    assert rejected.status_code == 402 and rejected.get_json()["order"]["status"] == "REJECTED"
    assert_problem_matches_the_document(spec, "POST", "/orders", rejected)
    saga_id = client.post("/orders", json=ORDER).get_json()["saga_id"]
    support = api_client(client.application, "support")
    refused = support.post(f"/admin/sagas/{saga_id}/retry", json={"reason": "why not"})
    assert refused.status_code == 409 and refused.get_json()["saga_id"] == saga_id
    assert_problem_matches_the_document(spec, "POST", "/admin/sagas/{saga_id}/{action}", refused)
