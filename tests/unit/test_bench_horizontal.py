"""bench/horizontal.py's own logic: how a configuration is read and how a run's bound is named from its figures."""
from __future__ import annotations

from typing import Any

from bench.horizontal import bound, parse_config


def test_a_configuration_names_its_groups_and_a_dedicated_queue() -> None:
    assert parse_config("4") == {"label": "4", "groups": [4], "processes": 4, "dedicated": None}
    assert parse_config("2+2/payment") == {"label": "2+2/payment", "groups": [2, 2], "processes": 4,
                                           "dedicated": "payment"}


def run(busy: float = 1.0, lock_samples: int = 0, pg_cores: float = 0.3, redis_cores: float = 0.02,
        idle: float = 0.0) -> dict[str, Any]:
    return {"cpu": {"busy_share": busy, "busy_cores": busy * 2, "cores": 2, "postgres_backend_cores": pg_cores,
                    "redis_cores": redis_cores, "ms_per_saga_total": 30.0,
                    "ms_per_saga": {"api": 4.0, "workers": 12.0, "postgres": 6.0, "redis": 0.4, "sandbox": 3.0,
                                    "client": 1.0, "other": 3.6}},
            "postgres": {"lock_wait_samples": lock_samples, "samples": 20},
            "unfinished_sagas": {"empty_share": idle}}


def test_the_bound_is_cpu_when_the_cores_are_busy_naming_the_largest_part_of_the_stack_and_the_rest() -> None:
    assert bound(run()) == "CPU (2.00 of 2 cores busy; most: workers; 12% outside the stack)"


def test_with_cores_to_spare_the_bound_is_the_database_the_broker_the_load_or_the_calls_in_flight() -> None:
    assert bound(run(busy=0.5, lock_samples=10)).startswith("database locks")
    assert bound(run(busy=0.5, pg_cores=0.9)).startswith("database CPU")
    assert bound(run(busy=0.5, redis_cores=0.9)).startswith("broker CPU")
    assert bound(run(busy=0.5, idle=0.8)).startswith("load")
    assert bound(run(busy=0.5)).startswith("calls in flight")
