"""Idempotency-Keys per caller and their time to live (tests/unit/test_idempotency_scope.py) again on PostgreSQL,
what only PostgreSQL shows (two callers racing on one key, two sweepers at once), and the caller-scope migration
on PostgreSQL."""
from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from services.orders import PlaceOrder, place_order
from services.runtime import Runtime
from tests.conftest import create_pg_database
from tests.integration.conftest import emptied
from tests.unit.fakes import runtime_for
from tests.unit.test_idempotency_scope import *  # noqa: F403 - every scope test, with this module's `runtime`
from tests.unit.test_idempotency_scope import DAY_S, sweep_at
from tests.unit.test_migrations import legacy_keys_scoped

pytestmark = pytest.mark.integration

@pytest.fixture
def runtime(pg_url: str) -> Iterator[Runtime]:
    emptied(pg_url)
    rt = runtime_for(pg_url)
    yield rt
    rt.close()


def test_the_runtime_is_on_postgresql(runtime: Runtime) -> None:
    assert runtime.db.engine.dialect.name == "postgresql"


def test_two_requests_of_one_caller_racing_on_a_key_make_one_order(runtime: Runtime) -> None:
    results: list[tuple[int | None, bool]] = []
    start = threading.Barrier(8)

    def post(caller: str) -> None:
        start.wait()
        placed = place_order(runtime, PlaceOrder(7, 2, 1, "race-1", caller=caller))
        results.append((placed.order.id, placed.created))

    threads = [threading.Thread(target=post, args=("shop-a" if n % 2 else "shop-b",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert len({order_id for order_id, _ in results}) == 2  # one per caller
    assert sum(created for _, created in results) == 2


def test_two_sweepers_at_once_forget_each_key_once(runtime: Runtime, pg_url: str) -> None:
    for n in range(6):
        place_order(runtime, PlaceOrder(7, 2, 1, f"k-{n}", caller="shop-a"))
    other = runtime_for(pg_url)
    try:
        counts: list[int] = []
        threads = [threading.Thread(target=lambda rt=rt: counts.append(sweep_at(rt, DAY_S + 60).forgotten_keys))
                   for rt in (runtime, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.close()
    assert sum(counts) == 6
    assert sweep_at(runtime, DAY_S + 60).forgotten_keys == 0


def test_keys_stored_before_keys_had_a_caller_belong_to_the_default_storefront_token_on_postgresql(
        postgres_server: str) -> None:
    url, drop = create_pg_database(postgres_server)
    try:
        assert legacy_keys_scoped(url) == [("retry-1", "storefront"), (None, None)]
    finally:
        drop()
