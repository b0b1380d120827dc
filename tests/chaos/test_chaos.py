"""Chaos scenarios: real workers, a throwaway PostgreSQL and redis-server, a sandbox, 200 orders and ~10% cancels
each, one fault per scenario; afterwards every saga must end (or be parked with a reason) and money and goods must
add up (tests/chaos/conftest.py: check_invariants).

Run: .venv/bin/python -m pytest tests/chaos -q -s -m chaos
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.chaos.conftest import PostgresServer, RedisServer, Workload, chaos_stack, run_scenario
from tests.support import wait_until


def at(workload: Workload, seconds: float) -> None:
    """Sleep until `seconds` into the workload."""
    time.sleep(max(seconds - workload.elapsed(), 0))


@pytest.mark.chaos
def test_worker_processes_killed_with_dozens_of_sagas_in_flight(tmp_path: Path, chaos_postgres: PostgresServer,
                                                                chaos_redis: RedisServer) -> None:
    """Two worker processes on the thread pool, providers answering in 300-700 ms; three times a worker process is
    SIGKILLed while 24 or more steps are running, and started again."""
    with chaos_stack("worker-kill", tmp_path, chaos_postgres, chaos_redis,
                     workers=(("w1", True), ("w2", False))) as stack:
        for provider in ("payment", "delivery", "messaging"):
            stack.sandbox.behave(provider, latency_ms=[300, 700])
        workload = Workload(stack, seed=1, rate_per_s=40)
        rng = random.Random(1)
        plan = sorted((rng.uniform(1.5, 4.5), name) for name in ("w1", "w2", "w1"))
        killed: list[tuple[str, int]] = []

        def fault() -> None:
            for when, name in plan:
                at(workload, when)
                wait_until(lambda: stack.running_steps() >= 24, 10, 0.02, "two dozen steps in flight")
                in_flight = stack.running_steps()
                stack.kill_worker(name)
                killed.append((name, in_flight))
                stack.start_worker(name, beat=name == "w1")

        run_scenario(stack, workload, fault)
        assert len(killed) == 3 and all(n >= 24 for _, n in killed), killed


@pytest.mark.chaos
def test_redis_killed_and_restarted_empty(tmp_path: Path, chaos_postgres: PostgresServer,
                                          chaos_redis: RedisServer) -> None:
    with chaos_stack("redis-kill", tmp_path, chaos_postgres, chaos_redis) as stack:
        workload = Workload(stack, seed=2)

        def fault() -> None:
            at(workload, 4.0)
            chaos_redis.kill()
            time.sleep(3.0)
            chaos_redis.start()

        run_scenario(stack, workload, fault)


@pytest.mark.chaos
def test_postgres_stopped_immediately_for_ten_seconds(tmp_path: Path, chaos_postgres: PostgresServer,
                                                      chaos_redis: RedisServer) -> None:
    with chaos_stack("postgres-outage", tmp_path, chaos_postgres, chaos_redis) as stack:
        # The clients keep posting through the outage (each POST then answers 503, is not accepted and that client
        # backs off half a second), until 200 orders are accepted.
        workload = Workload(stack, seed=3)

        def fault() -> None:
            at(workload, 4.0)
            chaos_postgres.stop("immediate")
            time.sleep(10.0)
            chaos_postgres.start()

        run_scenario(stack, workload, fault)
        assert workload.refused > 0, "the API never answered 503 while PostgreSQL was down"
        assert len(workload.accepted) == 200


@pytest.mark.chaos
def test_every_step_message_delivered_twice_to_two_racing_workers(tmp_path: Path, chaos_postgres: PostgresServer,
                                                                  chaos_redis: RedisServer) -> None:
    workers = (("w1", True), ("w2", False))
    with chaos_stack("duplicate-dispatch", tmp_path, chaos_postgres, chaos_redis, workers=workers,
                     CHAOS_DUPLICATE_DISPATCH="1") as stack:
        assert stack.settings.chaos_duplicate_dispatch
        workload = Workload(stack, seed=4)

        run_scenario(stack, workload, workload.wait_posted)
        assert stack.not_claimed() > 0, "no duplicate was ever turned away: were messages really sent twice?"


@pytest.mark.chaos
def test_payment_charges_but_loses_its_response(tmp_path: Path, chaos_postgres: PostgresServer,
                                                chaos_redis: RedisServer) -> None:
    with chaos_stack("payment-lost-response", tmp_path, chaos_postgres, chaos_redis,
                     workers=(("w1", True),)) as stack:
        assert stack.settings.provider_timeout_s == 2
        stack.sandbox.behave("payment", lose_response=0.3, hang_ms=3000)
        workload = Workload(stack, seed=5)

        run_scenario(stack, workload, workload.wait_posted)
