"""Hostile input: every request body, header and path is bounded, and what is refused is a 4xx problem naming
what was wrong, never a 500. tests/integration/test_input_bounds_postgres.py runs these again on PostgreSQL, which
refuses what SQLite stores (NUL in text)."""
from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from api.security_headers import MAX_JSON_DEPTH, MAX_JSON_DIGITS, json_shape_problem
from api.views import MAX_WAIT_S, requested_wait
from services.runtime import Runtime
from tests.support import api_client

PROBLEM = "application/problem+json"
ORDER = {"customer_id": 7, "book_id": 2, "qty": 1}
# Every endpoint that takes a JSON body, with a body it accepts as far as its schema goes.
JSON_ENDPOINTS = [
    ("storefront", "/orders", ORDER),
    ("storefront", "/orders/1/cancel", {"reason": "changed my mind"}),
    ("support", "/admin/sagas/1/retry", {"reason": "provider fixed"}),
    ("support", "/admin/bulk", {"action": "retry", "reason": "provider fixed", "filter": {}}),
    ("support", "/admin/bulk/abc/run", {"batch_size": 10}),
]
# (role, path, body or None, where the text goes: a JSON field or a query parameter)
TEXT_FIELDS = [
    ("storefront", "/orders/1/cancel", {}, "reason"),
    ("support", "/admin/sagas/1/resume", {"reason": "provider fixed", "step": "pay"}, "reason"),
    ("support", "/admin/sagas/1/resume", {"reason": "provider fixed", "step": "pay"}, "step"),
    ("support", "/admin/bulk", {"action": "retry", "reason": "provider fixed", "filter": {}}, "reason"),
    ("support", "/admin/bulk", {"action": "resume", "reason": "provider fixed", "step": "pay", "filter": {}}, "step"),
    ("viewer", "/admin/sagas", None, "error"),
    ("viewer", "/admin/sagas", None, "failing_step"),
    ("viewer", "/admin/sagas/counts", None, "error"),
    ("viewer", "/admin/audit", None, "bulk_token"),
]


@pytest.fixture
def app(runtime: Runtime) -> Flask:
    return create_app(runtime.settings, runtime=runtime)


def client_of(app: Flask, role: str) -> FlaskClient:
    return api_client(app, role)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body: dict[str, Any] = response.get_json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def assert_names(response: Any, field: str) -> None:
    body = assert_problem(response, 422)
    assert field in body["errors"], body
    assert field in body["detail"]


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def send_text(app: Flask, role: str, path: str, body: dict[str, Any] | None, field: str, value: str) -> Any:
    client = client_of(app, role)
    if body is None:
        return client.get(path, query_string={field: value})
    return client.post(path, json={**body, field: value})


# --- JSON nesting -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("role", "path", "_body"), JSON_ENDPOINTS)
@pytest.mark.parametrize("shape", ["objects", "arrays"])
def test_json_nested_far_deeper_than_the_bound_is_a_400_problem_on_every_json_endpoint(
        app: Flask, role: str, path: str, _body: Any, shape: str) -> None:
    data = nested(5_000) if shape == "objects" else "[" * 20_000 + "]" * 20_000  # under MAX_BODY_BYTES
    response = client_of(app, role).post(path, data=data, content_type="application/json")
    body = assert_problem(response, 400)
    assert str(MAX_JSON_DEPTH) in body["detail"]


def test_json_nested_just_past_the_bound_is_refused_and_at_the_bound_is_read(app: Flask) -> None:
    client = client_of(app, "storefront")
    too_deep = client.post("/orders", data=nested(MAX_JSON_DEPTH + 1), content_type="application/json")
    assert "nests deeper" in assert_problem(too_deep, 400)["detail"]
    at_bound = client.post("/orders", data=nested(MAX_JSON_DEPTH), content_type="application/json")
    assert_names(at_bound, "a")  # parsed, then refused as a field the order does not have


def test_brackets_inside_strings_do_not_count_as_nesting(app: Flask) -> None:
    client = client_of(app, "storefront")
    order_id = client.post("/orders", json=ORDER).get_json()["id"]
    reason = '[{"' * 150 + "\\"
    response = client.post(f"/orders/{order_id}/cancel", json={"reason": reason})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["reason"] == reason


def test_the_scan_counts_only_brackets_and_digits_outside_strings() -> None:
    assert json_shape_problem(b'{"a": [1, 2, {"b": []}], "c": {}}', depth=4) is None
    assert "nests deeper than 4" in str(json_shape_problem(b'{"a": [1, 2, {"b": [[]]}]}', depth=4))
    assert json_shape_problem(b'["[[[[", "\\"[[[[", "]]]]"]', depth=1) is None
    assert json_shape_problem(b'[' * 10, depth=3)  # still open: deep all the same
    assert json_shape_problem(b'{"reason": "' + b"9" * 30 + b'", "qty": 10}', digits=20) is None
    assert "more than 20 digits" in str(json_shape_problem(b'{"qty": -' + b"9" * 21 + b"}", digits=20))


def test_a_number_too_long_for_python_to_read_is_a_400_problem(app: Flask) -> None:
    data = '{"customer_id": 7, "book_id": 2, "qty": %s}' % ("9" * (MAX_JSON_DIGITS + 1))  # noqa: UP031
    response = client_of(app, "storefront").post("/orders", data=data, content_type="application/json")
    assert "digits" in assert_problem(response, 400)["detail"]


def test_a_long_string_of_digits_is_text_not_a_number(app: Flask) -> None:
    client = client_of(app, "storefront")
    order_id = client.post("/orders", json=ORDER).get_json()["id"]
    padding = "9" * (MAX_JSON_DIGITS + 1)  # in a field the schema refuses, so only the scan could have said 400
    response = client.post(f"/orders/{order_id}/cancel", json={"reason": "too slow", "note": padding})
    assert_names(response, "note")


# --- unknown fields ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("role", "path", "body"), JSON_ENDPOINTS)
def test_an_unknown_field_is_a_422_naming_it_on_every_json_endpoint(app: Flask, role: str, path: str,
                                                                     body: dict[str, Any]) -> None:
    assert_names(client_of(app, role).post(path, json={**body, "discount": 100}), "discount")


def test_an_unknown_field_in_a_nested_object_is_named_by_its_path(app: Flask) -> None:
    body = {"action": "retry", "reason": "provider fixed", "filter": {"stauts": ["FAILED"]}}
    assert_names(client_of(app, "support").post("/admin/bulk", json=body), "filter.stauts")


def test_every_request_body_refuses_unknown_fields_in_the_openapi(app: Flask) -> None:
    spec = app.test_client().get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    for name in request_body_schemas(spec):
        assert schemas[name].get("additionalProperties") is False, name


# --- text: length and control characters ------------------------------------------------------------------------
def test_every_request_string_has_a_max_length_in_the_openapi(app: Flask) -> None:
    spec = app.test_client().get("/openapi.json").get_json()
    strings = list(request_strings(spec))
    assert len(strings) >= 12
    # Two headers are read leniently rather than refused, so they state no bound the API would enforce (gunicorn
    # caps every header at 8,190 bytes): an X-Request-ID that is not sensible is replaced by a new id, and
    # preferences other than `wait=N` are ignored (RFC 7240).
    lenient = ("X-Request-ID", "Prefer")
    unbounded = [where for where, schema in strings if "maxLength" not in schema and "enum" not in schema
                 and "format" not in schema and "pattern" not in schema and not where.endswith(lenient)]
    assert unbounded == []


@pytest.mark.parametrize(("role", "path", "body", "field"), TEXT_FIELDS)
@pytest.mark.parametrize("bad", ["\x00", "\x1b[31m", "\x7f", "\x08"])
def test_a_control_character_in_any_text_input_is_a_422_naming_the_field(
        app: Flask, role: str, path: str, body: dict[str, Any] | None, field: str, bad: str) -> None:
    assert_names(send_text(app, role, path, body, field, f"pa{bad}y"), field)


@pytest.mark.parametrize(("role", "path", "body", "field"), [t for t in TEXT_FIELDS if t[2] is not None])
def test_a_lone_surrogate_in_a_json_string_is_a_422_naming_the_field(
        app: Flask, role: str, path: str, body: dict[str, Any], field: str) -> None:
    data = json.dumps({**body, field: "pa"}).replace('"pa"', '"pa\\ud800y"')  # JSON decodes it; UTF-8 cannot hold it
    response = client_of(app, role).post(path, data=data, content_type="application/json")
    assert_names(response, field)


@pytest.mark.parametrize(("role", "path", "body", "field"), TEXT_FIELDS)
def test_text_over_its_max_length_is_a_422_naming_the_field(app: Flask, role: str, path: str,
                                                            body: dict[str, Any] | None, field: str) -> None:
    assert_names(send_text(app, role, path, body, field, "x" * 501), field)


def test_a_reason_keeps_its_line_breaks_tabs_and_any_script(app: Flask) -> None:
    client = client_of(app, "storefront")
    order_id = client.post("/orders", json=ORDER).get_json()["id"]
    reason = "wrong book\r\n\tordered twice — 注文 📚"
    response = client.post(f"/orders/{order_id}/cancel", json={"reason": reason})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert client.get(f"/orders/{order_id}").get_json()["reason"] == reason


def test_a_step_name_is_one_line(app: Flask) -> None:
    response = client_of(app, "support").post("/admin/sagas/1/resume", json={"reason": "fixed", "step": "pay\n"})
    assert_names(response, "step")


def test_a_status_filter_repeated_beyond_the_statuses_there_are_is_a_422(app: Flask) -> None:
    response = client_of(app, "viewer").get("/admin/sagas", query_string=[("status", "FAILED")] * 6)
    assert_names(response, "status")


# --- headers ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["k" * 201, "has space", "tab\tkey", "caf\u00e9", "nul\x00"])
def test_an_idempotency_key_outside_its_charset_or_length_is_a_422_naming_it(app: Flask, key: str) -> None:
    environ = {"HTTP_IDEMPOTENCY_KEY": key.encode("utf-8").decode("latin-1")}
    response = client_of(app, "storefront").post("/orders", json=ORDER, environ_overrides=environ)
    assert_names(response, "Idempotency-Key")


def test_the_openapi_documents_the_idempotency_key_bounds(app: Flask) -> None:
    operation = app.test_client().get("/openapi.json").get_json()["paths"]["/orders"]["post"]
    header = next(p for p in operation["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header"
    assert header["schema"] == {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[!-~]{1,200}$"}


def test_an_idempotency_key_of_200_visible_characters_is_taken(app: Flask) -> None:
    key = ("0123456789ABCDEF-_.~!" * 10)[:200]
    response = client_of(app, "storefront").post("/orders", json=ORDER, headers={"Idempotency-Key": key})
    assert response.status_code == 202, response.get_data(as_text=True)


@pytest.mark.parametrize(("prefer", "wait"), [("wait=5", 5.0), ("respond-async, wait=31", MAX_WAIT_S),
                                              ("wait=" + "9" * 400, MAX_WAIT_S), ("wait=abc", None), ("", None)])
def test_prefer_wait_is_clamped_to_its_documented_max(app: Flask, prefer: str, wait: float | None) -> None:
    with app.test_request_context("/orders", method="POST", headers={"Prefer": prefer}):
        assert requested_wait() == wait


# --- paths ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/admin/bulk/ab%00cd", "/admin/bulk/has%20space", "/admin/bulk/" + "a" * 65,
                                  "/admin/bulk/ab%00cd/run"])
def test_a_bulk_token_outside_its_alphabet_is_a_404_problem(app: Flask, path: str) -> None:
    client = client_of(app, "support")
    response = client.post(path, json={}) if path.endswith("/run") else client.get(path)
    assert_problem(response, 404)


@pytest.mark.parametrize("path", ["/admin/sagas/99999999999999999999", "/admin/sagas/2147483648",
                                  "/orders/2147483648/cancel", "/admin/sagas/2147483648/retry"])
def test_an_id_beyond_the_database_integer_in_any_path_is_a_404_problem(app: Flask, path: str) -> None:
    client = client_of(app, "support")
    posts = path.endswith(("/cancel", "/retry"))
    response = client.post(path, json={"reason": "why not"}) if posts else client.get(path)
    assert_problem(response, 404)


@pytest.mark.parametrize(("field", "value"), [("customer_id", 2**31), ("book_id", 2**63), ("qty", 101),
                                              ("customer_id", 0), ("qty", 10**400)])
def test_an_integer_beyond_its_range_in_a_body_is_a_422_naming_it(app: Flask, field: str, value: int) -> None:
    data = '{"customer_id": 7, "book_id": 2, "qty": 1, "%s": %d}' % (field, value)  # noqa: UP031 - duplicate key
    response = client_of(app, "storefront").post("/orders", data=data, content_type="application/json")
    assert_names(response, field)


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "1969-12-31T23:59:59Z",
                                  "9999-01-01T00:00:00Z"])
@pytest.mark.parametrize("field", ["since", "until"])
def test_a_time_filter_outside_the_years_1970_to_9998_is_a_422_naming_it(app: Flask, field: str, when: str) -> None:
    client = client_of(app, "support")
    assert_names(client.get("/admin/sagas", query_string={field: when}), field)
    assert_names(client.get("/admin/sagas/counts", query_string={field: when}), field)
    body = {"action": "retry", "reason": "provider fixed", "filter": {field: when}}
    assert_names(client.post("/admin/bulk", json=body), f"filter.{field}")


def test_a_time_filter_at_the_edges_of_its_range_is_taken(app: Flask) -> None:
    client = client_of(app, "viewer")
    for since, until in (("1970-01-01T00:00:00Z", "9998-12-31T23:59:59+00:00"),
                         ("1970-01-01T00:30:00+14:00", "9998-12-31T23:00:00-14:00")):  # as written: any offset
        response = client.get("/admin/sagas", query_string={"since": since, "until": until})
        assert response.status_code == 200, response.get_data(as_text=True)


def test_a_bulk_run_batch_size_out_of_range_is_a_422(app: Flask) -> None:
    response = client_of(app, "support").post("/admin/bulk/abc/run", json={"batch_size": 2**40})
    assert_names(response, "batch_size")


# --- the OpenAPI walk -------------------------------------------------------------------------------------------
def operations(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{method} {path}", operation) for path, item in spec["paths"].items()
            for method, operation in item.items() if isinstance(operation, dict)]


def body_schema(operation: dict[str, Any]) -> str | None:
    """The component name of an operation's JSON request body, if it takes one."""
    ref = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    return ref["$ref"].rsplit("/", 1)[-1] if "$ref" in ref else None


def request_body_schemas(spec: dict[str, Any]) -> list[str]:
    names = [name for _, operation in operations(spec) if (name := body_schema(operation))]
    assert len(names) >= len(JSON_ENDPOINTS), names
    return names


def request_strings(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every string a client sends: path and query parameters and request body properties (nested included)."""
    schemas = spec["components"]["schemas"]
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(where: str, schema: dict[str, Any]) -> None:
        if "$ref" in schema:
            walk(where, schemas[schema["$ref"].rsplit("/", 1)[-1]])
        elif schema.get("type") == "string":
            found.append((where, schema))
        elif schema.get("type") == "array":
            walk(f"{where}[]", schema.get("items", {}))
        for name, prop in schema.get("properties", {}).items():
            walk(f"{where}.{name}", prop)

    for path, item in spec["paths"].items():
        for parameter in item.get("parameters", []):
            walk(f"{path} {parameter['name']}", parameter.get("schema", {}))
    for where, operation in operations(spec):
        for parameter in operation.get("parameters", []):
            walk(f"{where} {parameter['name']}", parameter.get("schema", {}))
        name = body_schema(operation)
        if name:
            walk(f"{where} body", schemas[name])
    return found
