"""Poison steps end FAILED without looping hot; a worker stopped with SIGTERM hands its work back."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Stack, build_stack
from tests.support import start_worker, wait_until

pytestmark = pytest.mark.integration


def test_a_step_that_raises_every_time_ends_failed_after_its_attempts_and_is_compensated(
    tmp_path: Path, postgres_server: str, redis_server: str,
) -> None:
    with build_stack(tmp_path, "postgresql", postgres_server, CHAOS_POISON_STEPS="ship:raise") as live:
        order = live.post_order(customer_id=60).get_json()
        saga = live.wait_saga(order["saga_id"])

        ship = live.steps(saga)["ship"]
        assert ship["status"] == "FAILED" and "poisoned" in ship["error"]
        assert ship["attempts"] == ship["max_attempts"]
        assert saga["status"] == "COMPENSATED"
        assert live.steps(saga)["cancel_payment"]["status"] == "COMPENSATED"
        assert live.order(order["id"])["status"] == "CANCELLED"
        assert len(live.sandbox.ledger("payment", order["id"], "refund")) == 1


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_step_that_crashes_its_process_is_parked_failed_after_bounded_recoveries(
    tmp_path: Path, postgres_server: str, redis_server: str, rabbitmq_server: str, broker: str,
) -> None:
    """On RabbitMQ the crashing message comes back at once to the restarted worker (no visibility timeout): it finds
    its step still claimed under the dead worker's lease, so it cannot loop; recoveries stay bounded."""
    env = {"CHAOS_POISON_STEPS": "notify:crash", "STEP_LEASE_S": "2", "MAX_RECOVERIES": "2"}
    with build_stack(tmp_path, "postgresql", postgres_server, broker=broker, **env) as live:
        order = live.post_order(customer_id=61).get_json()
        crashes: list[int] = []

        def ended() -> dict | None:
            if live.worker.proc.poll() is not None:  # as `bookmarket up`, Docker or Kubernetes do: start it again
                crashes.append(live.worker.proc.returncode)
                live.worker = start_worker(live.env, tmp_path / f"worker{len(crashes) + 1}.log")
            saga = live.saga(order["saga_id"])
            return saga if saga["status"] in ("COMPLETED", "COMPENSATED", "FAILED") else None

        saga = wait_until(ended, 90, 0.2, "the saga to be parked")

        assert crashes == [13, 13, 13]  # each attempt at notify killed the whole worker process
        notify = live.steps(saga)["notify"]
        assert saga["status"] == "FAILED" and "parked after 3 recoveries" in saga["reason"]
        assert saga["recoveries"] == 3
        assert notify["status"] == "FAILED" and "lease expired" in notify["error"]
        assert notify["attempts"] == 3 <= notify["max_attempts"]
        assert live.order(order["id"])["status"] == "SHIPPED"
        assert live.sandbox.ledger("messaging", order["id"]) == []


def test_sigterm_lets_the_worker_finish_or_hand_back_its_steps_and_nothing_is_lost(
    tmp_path: Path, postgres_server: str, redis_server: str,
) -> None:
    with build_stack(tmp_path, "postgresql", postgres_server) as live:
        live.sandbox.behave("payment", latency_ms=[800, 800])
        orders = [live.post_order(customer_id=62).get_json() for _ in range(6)]
        wait_until(lambda: _running(live, orders) >= 1, 10, 0.05, "a step in flight")

        started = time.monotonic()
        code = live.worker.stop(signal.SIGTERM, timeout=30)
        assert code == 0 and time.monotonic() - started < 30
        live.worker = start_worker(live.env, tmp_path / "worker2.log")

        for order in orders:
            saga = live.wait_saga(order["saga_id"], timeout=60)
            assert saga["status"] == "COMPLETED" and saga["recoveries"] == 0, saga
            assert len(live.sandbox.ledger("payment", order["id"], "charge")) == 1
        live.worker.stop()


def test_sigterm_waits_for_running_calls_only_up_to_the_grace_then_the_sweeper_takes_them_back(
    tmp_path: Path, postgres_server: str, redis_server: str,
) -> None:
    env = {"WORKER_SHUTDOWN_GRACE_S": "1", "PROVIDER_TIMEOUT_S": "20", "STEP_LEASE_S": "4"}
    with build_stack(tmp_path, "postgresql", postgres_server, **env) as live:
        live.sandbox.behave("payment", latency_ms=[6000, 6000])
        orders = [live.post_order(customer_id=63).get_json() for _ in range(6)]
        wait_until(lambda: _running(live, orders) == 6, 10, 0.05, "six charges in flight")

        started = time.monotonic()
        code = live.worker.stop(signal.SIGTERM, timeout=30)
        stopped_after = time.monotonic() - started
        assert code == 75 and stopped_after < 4, (code, stopped_after)
        assert "steps still running 1s after the shutdown began" in live.worker.log_tail()
        live.sandbox.behave("payment", latency_ms=[0, 0])
        live.worker = start_worker(live.env, tmp_path / "worker2.log")

        for order in orders:
            saga = live.wait_saga(order["saga_id"], timeout=60)
            assert saga["status"] == "COMPLETED" and saga["recoveries"] == 1, saga
            assert len(live.sandbox.ledger("payment", order["id"], "charge")) == 1
        live.worker.stop()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_worker_killed_with_sagas_in_flight_loses_none_and_charges_none_twice(
    tmp_path: Path, postgres_server: str, redis_server: str, rabbitmq_server: str, broker: str,
) -> None:
    """kill -9 of the whole worker process while charges are in flight: on RabbitMQ its unacked messages come back
    at once (its connection is gone) and find their steps still claimed; on Redis they wait for the visibility
    timeout. Either way the sweeper takes the steps back once their lease runs out and each order is charged once."""
    with build_stack(tmp_path, "postgresql", postgres_server, broker=broker, STEP_LEASE_S="3") as live:
        live.sandbox.behave("payment", latency_ms=[1500, 1500])
        orders = [live.post_order(customer_id=64).get_json() for _ in range(6)]
        wait_until(lambda: _running(live, orders) >= 3, 10, 0.05, "charges in flight")

        live.worker.stop(signal.SIGKILL, timeout=5)
        live.sandbox.behave("payment", latency_ms=[0, 0])
        live.worker = start_worker(live.env, tmp_path / "worker2.log")

        for order in orders:
            saga = live.wait_saga(order["saga_id"], timeout=60)
            assert saga["status"] == "COMPLETED", saga
            assert len(live.sandbox.ledger("payment", order["id"], "charge")) == 1
            assert all(s["status"] == "SUCCEEDED" for s in saga["steps"]), saga["steps"]
        assert sum(live.saga(o["saga_id"])["recoveries"] for o in orders) >= 3  # the killed charges were recovered


def _running(live: Stack, orders: list[dict]) -> int:
    return sum(live.steps(live.saga(o["saga_id"]))["pay"]["status"] == "RUNNING" for o in orders)
