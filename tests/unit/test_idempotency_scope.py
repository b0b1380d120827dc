"""Idempotency-Keys belong to their caller (the token's name) and are kept for IDEMPOTENCY_KEY_TTL_S: two callers'
keys never meet, a 409 only ever speaks of the caller's own order, and a key the sweeper forgot places a new order.
tests/integration/test_idempotency_scope_postgres.py runs these again on PostgreSQL."""
from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from domain.errors import IdempotencyConflict
from domain.model import utcnow
from services import sweeper
from services.orders import PlaceOrder, get_order, place_order
from services.runtime import Runtime
from services.sweeper import sweep
from tests.support import api_client, other_storefront_client

ORDER = {"customer_id": 7, "book_id": 2, "qty": 1}
DAY_S = 86_400


@pytest.fixture
def app(runtime: Runtime) -> Flask:
    return create_app(runtime.settings, runtime=runtime)


@pytest.fixture
def shop(app: Flask) -> FlaskClient:
    return api_client(app, "storefront")


@pytest.fixture
def other_shop(app: Flask) -> FlaskClient:
    return other_storefront_client(app)


def place(client: FlaskClient, key: str, body: dict[str, Any] | None = None) -> Any:
    return client.post("/orders", json=body or ORDER, headers={"Idempotency-Key": key})


def placed_id(response: Any) -> int:
    assert response.status_code == 202, response.get_data(as_text=True)
    return int(response.get_json()["id"])


def sweep_at(runtime: Runtime, later_s: float) -> sweeper.SweepReport:
    """One sweeper pass as if `later_s` seconds had passed since now."""
    runtime.clock = lambda: utcnow() + timedelta(seconds=later_s)
    try:
        return sweep(runtime)
    finally:
        runtime.clock = utcnow


# --- scope ------------------------------------------------------------------------------------------------------
def test_the_same_key_from_two_storefront_tokens_places_two_orders(shop: FlaskClient,
                                                                   other_shop: FlaskClient) -> None:
    mine, theirs = place(shop, "order-1"), place(other_shop, "order-1")
    assert placed_id(mine) != placed_id(theirs)
    assert "Idempotent-Replayed" not in theirs.headers


def test_each_caller_replays_its_own_order_for_a_shared_key(shop: FlaskClient, other_shop: FlaskClient) -> None:
    mine, theirs = placed_id(place(shop, "order-1")), placed_id(place(other_shop, "order-1"))
    again_mine, again_theirs = place(shop, "order-1"), place(other_shop, "order-1")
    assert again_mine.get_json()["id"] == mine and again_mine.headers["Idempotent-Replayed"] == "true"
    assert again_theirs.get_json()["id"] == theirs and again_theirs.headers["Idempotent-Replayed"] == "true"


def test_another_callers_key_with_a_different_body_is_a_new_order_not_a_409(shop: FlaskClient,
                                                                            other_shop: FlaskClient) -> None:
    mine = placed_id(place(shop, "order-1", {**ORDER, "qty": 1}))
    theirs = place(other_shop, "order-1", {**ORDER, "customer_id": 99, "qty": 5})
    assert placed_id(theirs) != mine
    assert theirs.get_json()["customer_id"] == 99


def test_a_409_for_a_reused_key_tells_nothing_of_the_order_it_holds(shop: FlaskClient) -> None:
    first = place(shop, "order-1", {**ORDER, "customer_id": 4242, "qty": 3}).get_json()
    response = place(shop, "order-1", {**ORDER, "qty": 2})
    assert response.status_code == 409 and response.mimetype == "application/problem+json"
    body = response.get_json()
    assert set(body) == {"type", "title", "status", "detail"}
    assert "4242" not in body["detail"] and f"/orders/{first['id']}" not in body["detail"]
    assert "Location" not in response.headers


def test_keys_without_a_caller_are_their_own_scope(runtime: Runtime) -> None:
    internal = place_order(runtime, PlaceOrder(7, 2, 1, "batch-1"))
    named = place_order(runtime, PlaceOrder(7, 2, 1, "batch-1", caller="storefront"))
    assert internal.created and named.created and internal.order.id != named.order.id
    assert not place_order(runtime, PlaceOrder(7, 2, 1, "batch-1")).created
    with pytest.raises(IdempotencyConflict):
        place_order(runtime, PlaceOrder(7, 2, 2, "batch-1", caller="storefront"))


# --- time to live -----------------------------------------------------------------------------------------------
def test_a_key_is_replayed_until_its_ttl_has_passed(runtime: Runtime, shop: FlaskClient) -> None:
    assert runtime.settings.idempotency_key_ttl_s == DAY_S  # the documented default
    first = placed_id(place(shop, "order-1"))
    assert sweep_at(runtime, DAY_S - 60).forgotten_keys == 0
    assert place(shop, "order-1").get_json()["id"] == first


def test_after_its_ttl_the_sweeper_forgets_a_key_and_it_places_a_new_order(runtime: Runtime,
                                                                            shop: FlaskClient) -> None:
    first = placed_id(place(shop, "order-1"))
    assert sweep_at(runtime, DAY_S + 60).forgotten_keys == 1
    again = place(shop, "order-1", {**ORDER, "qty": 4})  # no 409 either: the key is free
    assert placed_id(again) != first and "Idempotent-Replayed" not in again.headers
    assert get_order(runtime, first).order.qty == 1  # the order stays; only its key is gone
    assert sweep_at(runtime, 60).forgotten_keys == 0


def test_the_sweeper_forgets_keys_in_batches_oldest_first(runtime: Runtime, shop: FlaskClient,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [placed_id(place(shop, f"order-{n}")) for n in range(3)]
    placed_id(shop.post("/orders", json=ORDER))  # no key: nothing to forget
    monkeypatch.setattr(sweeper, "BATCH", 2)
    assert sweep_at(runtime, DAY_S + 60).forgotten_keys == 2
    assert place(shop, "order-2").get_json()["id"] == ids[2]  # the newest waits for the next pass
    assert sweep_at(runtime, DAY_S + 60).forgotten_keys == 1
    assert sweep_at(runtime, DAY_S + 60).forgotten_keys == 0
    assert all(placed_id(place(shop, f"order-{n}")) not in ids for n in range(3))


def test_a_ttl_of_zero_keeps_keys_forever(runtime: Runtime, shop: FlaskClient) -> None:
    runtime.settings = dataclasses.replace(runtime.settings, idempotency_key_ttl_s=0)
    first = placed_id(place(shop, "order-1"))
    assert sweep_at(runtime, 3650 * DAY_S).forgotten_keys == 0
    assert place(shop, "order-1").get_json()["id"] == first
