"""A frozen Redis (SIGSTOP: connections accepted, nothing answers) must not hold POST /orders past its bound.

The breaker-state read of admission and the publish of the first step both reach Redis on the request path; the
order is committed first, so it is answered 202 and the sweeper publishes it later. Each answer must come within
PUBLISH_TIMEOUT_S plus a second.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from infra.config import Settings
from infra.migrate import upgrade
from tests.conftest import create_pg_database
from tests.support import TOKENS_SETTING, RedisServer, api_client

pytestmark = pytest.mark.integration
PUBLISH_TIMEOUT_S = 1.0
BOUND_S = PUBLISH_TIMEOUT_S + 1.0
ORDER = {"customer_id": 3, "book_id": 1, "qty": 1}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(postgres_server: str, redis_server: RedisServer) -> Iterator[FlaskClient]:
    """The API on PostgreSQL (concurrent POSTs) and the private redis-server, PUBLISH_TIMEOUT_S=1."""
    database_url, drop = create_pg_database(postgres_server)
    upgrade(database_url)
    settings = Settings.from_env({"DATABASE_URL": database_url, "REDIS_URL": redis_server.url,
                                  "SAGA_QUEUE": f"saga-frozen-{uuid.uuid4().hex[:8]}",
                                  "SANDBOX_URL": "http://127.0.0.1:9", "PUBLISH_TIMEOUT_S": str(PUBLISH_TIMEOUT_S),
                                  "BOOKMARKET_TOKENS": TOKENS_SETTING})
    app = create_app(settings)
    yield api_client(app)
    app.extensions["bookmarket"].close()
    drop()


def timed_post(client: FlaskClient) -> tuple[int, float, int]:
    """POST an order: its status, how long the answer took and the order's id."""
    started = time.monotonic()
    response = client.post("/orders", json=ORDER)
    return response.status_code, time.monotonic() - started, response.get_json().get("id", 0)


def test_post_orders_answers_within_the_publish_bound_while_redis_is_frozen(
    client: FlaskClient, redis_server: RedisServer,
) -> None:
    assert timed_post(client)[0] == 202  # warm: connections to Redis are open and pooled
    redis_server.freeze()
    answers = []
    for pause_s in (0.0, 0.0, 0.3, 0.3, 0.0, 0.6):  # 0.3 s and more: admission and breaker caches have expired
        time.sleep(pause_s)
        answers.append(timed_post(client))
    redis_server.thaw()
    assert [status for status, _, _ in answers] == [202] * len(answers), answers
    slow = [round(took, 2) for _, took, _ in answers if took > BOUND_S]
    assert slow == [], f"answers over {BOUND_S:g}s: {slow} (all: {[round(t, 2) for _, t, _ in answers]})"
    for _, _, order_id in answers:
        assert client.get(f"/orders/{order_id}").get_json()["status"] == "PENDING"  # committed; the sweeper sends it


def test_concurrent_posts_each_answer_within_the_bound_while_redis_is_frozen(
    client: FlaskClient, redis_server: RedisServer,
) -> None:
    """More requests at once than pooled producers: the new ones connect to the frozen server, within the bound."""
    assert timed_post(client)[0] == 202
    redis_server.freeze()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: timed_post(api_client(client.application)), range(8)))
    redis_server.thaw()
    assert [status for status, _, _ in answers] == [202] * len(answers), answers
    assert max(took for _, took, _ in answers) <= BOUND_S, [round(took, 2) for _, took, _ in answers]
