"""The HTTP API in process: a SQLite file, a recording publisher, no broker, no worker, no network."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from domain.catalog import SEED_BOOKS
from services.runtime import Runtime
from tests.support import api_client
from tests.unit.fakes import RecordingPublisher, make_runtime, runtime_for

PROBLEM = "application/problem+json"
HUGE = "99999999999999999999"
STEPS = ["pay", "confirm", "ship", "mark_shipped", "notify"]


@pytest.fixture
def publisher(runtime: Runtime) -> RecordingPublisher:
    assert isinstance(runtime.publisher, RecordingPublisher)
    return runtime.publisher


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return api_client(create_app(runtime.settings, runtime=runtime))


def order(customer_id: int = 7, book_id: int = 2, qty: int = 3) -> dict[str, Any]:
    return {"customer_id": customer_id, "book_id": book_id, "qty": qty}


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is a problem+json with `status`; its body is returned."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status
    assert body["title"]
    assert "detail" in body
    return body


def assert_field_problem(response: Any, field: str) -> None:
    body = assert_problem(response, 422)
    assert field in body["errors"], body
    assert field in body["detail"]


def place(client: FlaskClient, body: dict[str, Any] | None = None, **headers: str) -> Any:
    return client.post("/orders", json=body if body is not None else order(), headers=headers)


# --- placing an order -------------------------------------------------------------------------------------------


def test_a_valid_order_is_accepted_with_its_location_amount_and_saga(client: FlaskClient,
                                                                     publisher: RecordingPublisher) -> None:
    response = place(client, order(customer_id=7, book_id=2, qty=3))
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body["id"], int)
    assert response.headers["Location"].endswith(f"/orders/{body['id']}")
    assert body["status"] == "PENDING"
    assert body["amount"] == "164.97"  # 54.99 x 3, computed by the server
    assert body["amount_cents"] == 16497
    assert (body["customer_id"], body["book_id"], body["qty"]) == (7, 2, 3)
    assert body["title"] == "Designing Data-Intensive Applications"
    assert isinstance(body["saga_id"], int)
    assert "Idempotent-Replayed" not in response.headers
    assert publisher.sent == [(body["saga_id"], "pay")]


def test_the_location_of_a_placed_order_answers_the_same_order(client: FlaskClient) -> None:
    placed = place(client)
    response = client.get(placed.headers["Location"])
    assert response.status_code == 200
    assert response.get_json()["id"] == placed.get_json()["id"]
    assert response.get_json()["amount"] == placed.get_json()["amount"]


def test_an_unknown_book_is_refused_naming_book_id(client: FlaskClient, publisher: RecordingPublisher) -> None:
    assert_field_problem(place(client, order(book_id=999)), "book_id")
    assert publisher.sent == []


@pytest.mark.parametrize("qty", [0, 101, -1])
def test_a_quantity_out_of_range_is_refused_naming_qty(client: FlaskClient, qty: int) -> None:
    assert_field_problem(place(client, order(qty=qty)), "qty")


@pytest.mark.parametrize("qty", ["2", 2.5, True, None])
def test_a_quantity_that_is_not_a_json_integer_is_refused_naming_qty(client: FlaskClient, qty: Any) -> None:
    assert_field_problem(place(client, {**order(), "qty": qty}), "qty")


@pytest.mark.parametrize("field", ["customer_id", "book_id", "qty"])
def test_a_missing_field_is_refused_naming_it(client: FlaskClient, field: str) -> None:
    body = order()
    del body[field]
    assert_field_problem(place(client, body), field)


@pytest.mark.parametrize("customer_id", [0, 2_147_483_648, "7"])
def test_a_bad_customer_id_is_refused_naming_it(client: FlaskClient, customer_id: Any) -> None:
    assert_field_problem(place(client, {**order(), "customer_id": customer_id}), "customer_id")


def test_an_unknown_extra_field_is_refused(client: FlaskClient, publisher: RecordingPublisher) -> None:
    response = place(client, {**order(), "amount": "0.01"})
    body = assert_problem(response, 422)
    assert "amount" in body["errors"]
    assert publisher.sent == []


def test_a_malformed_json_body_is_a_400_problem(client: FlaskClient) -> None:
    response = client.post("/orders", data='{"customer_id": 1,', content_type="application/json")
    assert_problem(response, 400)


def test_a_json_body_that_is_not_an_object_is_a_client_problem(client: FlaskClient) -> None:
    for body in ([order()], "text", 42, None):
        response = client.post("/orders", json=body)
        assert 400 <= response.status_code < 500, (body, response.status_code)
        assert_problem(response, response.status_code)


def test_a_body_that_is_not_json_is_a_client_problem(client: FlaskClient) -> None:
    response = client.post("/orders", data="customer_id=1", content_type="application/x-www-form-urlencoded")
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code)


def test_an_overlong_idempotency_key_is_refused(client: FlaskClient) -> None:
    response = place(client, **{"Idempotency-Key": "k" * 201})
    assert_field_problem(response, "Idempotency-Key")


# --- idempotency ------------------------------------------------------------------------------------------------


def test_a_retried_post_with_the_same_idempotency_key_returns_the_same_order_once(
        client: FlaskClient, publisher: RecordingPublisher) -> None:
    first = place(client, order(customer_id=41), **{"Idempotency-Key": "retry-1"})
    second = place(client, order(customer_id=41), **{"Idempotency-Key": "retry-1"})
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.get_json()["id"] == first.get_json()["id"]
    assert second.get_json()["saga_id"] == first.get_json()["saga_id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Location"] == first.headers["Location"]
    listed = client.get("/customers/41/orders")
    assert listed.status_code == 200
    assert len(listed.get_json()) == 1
    assert publisher.sent == [(first.get_json()["saga_id"], "pay")]


def test_an_idempotency_key_reused_for_a_different_order_is_a_409_problem(client: FlaskClient) -> None:
    assert place(client, order(qty=1), **{"Idempotency-Key": "reuse"}).status_code == 202
    assert_problem(place(client, order(qty=2), **{"Idempotency-Key": "reuse"}), 409)


def test_distinct_idempotency_keys_make_distinct_orders(client: FlaskClient) -> None:
    a = place(client, order(customer_id=5), **{"Idempotency-Key": "a"}).get_json()["id"]
    b = place(client, order(customer_id=5), **{"Idempotency-Key": "b"}).get_json()["id"]
    assert a != b


# --- reading orders, sagas, books -------------------------------------------------------------------------------


def test_an_unknown_order_is_a_404_problem(client: FlaskClient) -> None:
    assert_problem(client.get("/orders/12345"), 404)


@pytest.mark.parametrize("path", [f"/orders/{HUGE}", f"/sagas/{HUGE}", f"/customers/{HUGE}/orders",
                                  "/orders/2147483648", "/orders/-1", "/orders/abc"])
def test_an_id_beyond_int32_or_not_a_number_is_a_404_problem_never_a_500(client: FlaskClient, path: str) -> None:
    assert_problem(client.get(path), 404)


def test_an_unknown_saga_is_a_404_problem(client: FlaskClient) -> None:
    assert_problem(client.get("/sagas/777"), 404)


def test_the_saga_of_a_placed_order_lists_its_steps_in_order_all_pending(client: FlaskClient) -> None:
    saga_id = place(client).get_json()["saga_id"]
    response = client.get(f"/sagas/{saga_id}")
    assert response.status_code == 200
    saga = response.get_json()
    assert saga["id"] == saga_id
    assert [s["name"] for s in saga["steps"]] == STEPS
    assert [s["position"] for s in saga["steps"]] == sorted(s["position"] for s in saga["steps"])
    assert {s["status"] for s in saga["steps"]} == {"PENDING"}
    assert {s["attempts"] for s in saga["steps"]} == {0}


def test_books_lists_the_seeded_catalog_with_price_strings(client: FlaskClient) -> None:
    response = client.get("/books")
    assert response.status_code == 200
    books = response.get_json()
    assert [(b["id"], b["title"], b["price_cents"]) for b in books] == [
        (b.id, b.title, b.price_cents) for b in SEED_BOOKS]
    assert books[0]["price"] == "42.99"
    assert all(isinstance(b["price"], str) for b in books)


# --- HTTP-level errors ------------------------------------------------------------------------------------------


def test_a_wrong_method_is_a_405_problem_with_an_allow_header(client: FlaskClient) -> None:
    response = client.put("/orders", json=order())
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_an_unknown_route_is_a_404_problem(client: FlaskClient) -> None:
    assert_problem(client.get("/no/such/thing"), 404)


# --- documentation ----------------------------------------------------------------------------------------------


def test_the_openapi_document_describes_every_route(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec is not None
    assert spec["openapi"].startswith("3.")
    for path in ("/orders", "/orders/{order_id}", "/sagas/{saga_id}", "/books", "/customers/{customer_id}/orders",
                 "/notifications", "/health"):
        assert path in spec["paths"], path
    assert "post" in spec["paths"]["/orders"]


def test_the_docs_page_answers_html(client: FlaskClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"


# --- read models and paging -------------------------------------------------------------------------------------


def test_customer_orders_are_paged_with_an_x_pagination_header(client: FlaskClient) -> None:
    ids = [place(client, order(customer_id=9, qty=q)).get_json()["id"] for q in (1, 2, 3)]
    place(client, order(customer_id=10))
    response = client.get("/customers/9/orders?page=1&page_size=2")
    assert response.status_code == 200
    meta = json.loads(response.headers["X-Pagination"])
    assert meta["total"] == 3
    rows = response.get_json()
    assert len(rows) == 2
    assert {r["order_id"] for r in rows} <= set(ids)
    assert all(isinstance(r["amount"], str) for r in rows)
    second = client.get("/customers/9/orders?page=2&page_size=2").get_json()
    assert len(second) == 1
    assert {r["order_id"] for r in rows + second} == set(ids)


def test_a_customer_without_orders_has_an_empty_page(client: FlaskClient) -> None:
    response = client.get("/customers/12/orders")
    assert response.status_code == 200
    assert response.get_json() == []


@pytest.mark.parametrize("query", ["page_size=1000", "page_size=0", "page=0", "page=abc"])
def test_bad_paging_parameters_are_a_client_problem(client: FlaskClient, query: str) -> None:
    response = client.get(f"/customers/9/orders?{query}")
    assert 400 <= response.status_code < 500, response.status_code
    assert_problem(response, response.status_code)


def test_notifications_for_a_non_numeric_customer_are_refused_naming_customer_id(client: FlaskClient) -> None:
    assert_field_problem(client.get("/notifications?customer_id=abc"), "customer_id")


def test_notifications_start_empty(client: FlaskClient) -> None:
    response = client.get("/notifications?customer_id=3")
    assert response.status_code == 200
    assert response.get_json() == []


def test_health_reports_each_dependency_and_is_degraded_without_a_broker(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["database"] == "ok"
    assert body["broker"].startswith("error")
    assert body["status"] == "degraded"


# --- outages ----------------------------------------------------------------------------------------------------


def test_an_order_placed_while_the_broker_refuses_is_still_accepted(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, RecordingPublisher(fail=True))
    try:
        client = api_client(create_app(rt.settings, runtime=rt))
        response = place(client)
        assert response.status_code == 202
        assert response.get_json()["status"] == "PENDING"
    finally:
        rt.close()


def test_with_the_database_down_placing_an_order_is_a_503_problem_with_retry_after() -> None:
    rt = runtime_for("postgresql://postgres@127.0.0.1:1/x")
    try:
        client = api_client(create_app(rt.settings, runtime=rt))
        started = time.monotonic()
        response = place(client)
        assert time.monotonic() - started < 10
        assert_problem(response, 503)
        assert response.headers["Retry-After"]
        assert_problem(client.get("/orders/1"), 503)
    finally:
        rt.close()


def test_liveness_answers_while_the_process_serves_even_when_dependencies_are_down(client: FlaskClient) -> None:
    assert client.get("/health").status_code == 503  # no broker here
    response = client.get("/health/live")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}
