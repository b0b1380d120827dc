"""Circuit breakers, admission control and broker outages, with real workers, Redis and databases."""
from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.conftest import Stack, build_stack
from tests.support import free_port, wait_until

pytestmark = pytest.mark.integration
STACK_ENV = {"BREAKER_FAIL_MAX": "3", "BREAKER_RESET_S": "2"}


def place_all(live: Stack, customer_id: int, count: int) -> list[dict[str, Any]]:
    placed = []
    for _ in range(count):
        response = live.post_order(customer_id=customer_id)
        assert response.status_code == 202, response.get_json()
        placed.append(response.get_json())
    return placed


def wait_orders(live: Stack, orders: list[dict[str, Any]], status: str, timeout: float = 60) -> None:
    for order in orders:
        order_id = order["id"]
        wait_until(lambda oid=order_id: live.order(oid)["status"] == status, timeout, 0.1,
                   f"order {order_id} to be {status}")


def test_payment_breaker_opens_turns_orders_away_with_retry_after_and_recovers(live: Stack) -> None:
    live.sandbox.behave("payment", error_rate=1.0)
    accepted = place_all(live, customer_id=40, count=3)

    def refused() -> Any:
        response = live.post_order(customer_id=41)
        if response.status_code == 202:
            accepted.append(response.get_json())
            return None
        return response

    response = wait_until(refused, 20, 0.2, "the API to turn orders away")

    assert response.status_code == 503 and response.content_type == "application/problem+json"
    assert 1 <= int(response.headers["Retry-After"]) <= 3
    assert "payment" in response.get_json()["detail"]
    accepted_41 = [o["id"] for o in accepted if o["customer_id"] == 41]
    assert [o["order_id"] for o in live.client.get("/customers/41/orders").get_json()] == accepted_41[::-1]
    assert live.client.get("/books").status_code == 200
    def pay_steps() -> list[dict[str, Any]]:
        return [live.steps(live.saga(o["saga_id"]))["pay"] for o in accepted]

    # the calls that failed were attempts (retried after a backoff); the retries find the breaker open and wait
    wait_until(lambda: any(step["status"] == "WAITING" for step in pay_steps()), 10, 0.05,
               "a payment step to wait for the open breaker")
    assert all(step["status"] in ("WAITING", "PENDING", "RUNNING") for step in pay_steps())

    live.sandbox.behave("payment", error_rate=0.0)
    wait_orders(live, accepted, "SHIPPED")

    for order in accepted:
        pay = live.steps(live.saga(order["saga_id"]))["pay"]
        assert pay["status"] == "SUCCEEDED" and pay["attempts"] < pay["max_attempts"]
        assert len(live.sandbox.ledger("payment", order["id"], "charge")) == 1
    assert wait_until(lambda: live.post_order(customer_id=42).status_code == 202, 10, 0.3, "the breaker to close")


def test_delivery_down_orders_are_accepted_paid_and_shipped_after_it_returns(live: Stack) -> None:
    live.sandbox.behave("delivery", down=True)
    orders = place_all(live, customer_id=43, count=4)
    wait_orders(live, orders, "PAID")
    wait_until(lambda: any(live.steps(live.saga(o["saga_id"]))["ship"]["status"] == "WAITING" for o in orders),
               20, 0.2, "ship to wait for the delivery breaker")
    assert live.post_order(customer_id=44).status_code == 202  # delivery's outage never blocks ordering

    live.sandbox.behave("delivery", down=False)

    wait_orders(live, orders, "SHIPPED")
    for order in orders:
        assert live.wait_saga(order["saga_id"])["status"] == "COMPLETED"
        assert len(live.sandbox.ledger("delivery", order["id"], "ship")) == 1


def test_declined_payments_never_trip_the_payment_breaker(live: Stack) -> None:
    live.sandbox.behave("payment", decline_over=1)
    orders = place_all(live, customer_id=45, count=5)
    wait_orders(live, orders, "REJECTED")
    live.sandbox.behave("payment", decline_over=None)

    response = live.post_order(customer_id=45)

    assert response.status_code == 202


@pytest.fixture
def redis_server_process(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A throwaway redis-server on a free port that a test may kill and restart."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmp_path)]

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _pings(port), 10, 0.05, "redis to answer")
        return proc

    server = {"port": port, "proc": start(), "start": start}
    yield server
    server["proc"].kill()
    server["proc"].wait()


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def test_orders_posted_while_redis_is_down_are_accepted_and_dispatched_after_it_returns(
    tmp_path: Path, postgres_server: str, redis_server_process: dict[str, Any],
) -> None:
    url = f"redis://127.0.0.1:{redis_server_process['port']}/0"
    with build_stack(tmp_path, "postgresql", postgres_server, REDIS_URL=url, **STACK_ENV) as live:
        before = place_all(live, customer_id=46, count=3)
        wait_orders(live, before, "SHIPPED")

        redis_server_process["proc"].send_signal(signal.SIGKILL)
        redis_server_process["proc"].wait()
        during = live.post_orders_without_broker(6, customer_id=46)

        redis_server_process["proc"] = redis_server_process["start"]()

        wait_orders(live, before + during, "SHIPPED", timeout=90)
        for order in during:
            assert len(live.sandbox.ledger("payment", order["id"], "charge")) == 1
