"""The PostgreSQL connection budget (README, "PostgreSQL connections"): under a burst of orders a worker process
on its default thread pool (192 threads) opens at most DB_POOL_SIZE (16) connections for its steps and its
sweeper one more, and each API process at most API_DB_POOL_SIZE (8); every connection names its process's role in
pg_stat_activity's application_name."""
from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from cli.main import gunicorn_api
from tests.integration.conftest import TERMINAL_SAGA, ConnectionsByRole, build_stack
from tests.support import ProcessHandle, bearer, free_port, spawn, wait_http, wait_until

pytestmark = pytest.mark.integration

DB_POOL_SIZE = 16  # the default
API_DB_POOL_SIZE = 8  # the default
API_PROCESSES = 2  # `bookmarket api`: gunicorn with 2 processes of 16 threads


@pytest.fixture(scope="module")
def api_and_worker(tmp_path_factory: pytest.TempPathFactory, postgres_server: str,
                   redis_server: str) -> Iterator[tuple[str, str]]:
    """A worker (default threads and pool, with its sweeper) and the API under gunicorn on a fresh database."""
    tmp: Path = tmp_path_factory.mktemp("budget")
    folder = tmp / "prometheus"
    folder.mkdir()
    with build_stack(tmp, "postgresql", postgres_server, PROMETHEUS_MULTIPROC_DIR=str(folder),
                     ADMISSION_TARGET_MS="0") as stack:
        port = free_port()
        api = ProcessHandle(spawn(gunicorn_api("127.0.0.1", port), stack.env, tmp / "api.log"),
                            f"http://127.0.0.1:{port}", tmp / "api.log")
        try:
            wait_http(f"{api.url}/health/live", api.proc)
            yield api.url, sa.engine.make_url(stack.env["DATABASE_URL"]).database or ""
        finally:
            api.stop()


def test_a_busy_worker_and_api_stay_within_their_documented_postgresql_connections(
        api_and_worker: tuple[str, str], postgres_server: str) -> None:
    api_url, database = api_and_worker

    def place(i: int) -> int:
        answer = requests.post(f"{api_url}/orders", json={"customer_id": 5000 + i, "book_id": 1, "qty": 1},
                               headers=bearer(), timeout=30)
        assert answer.status_code == 202, answer.text
        return int(answer.json()["saga_id"])

    def ended(saga_id: int) -> bool:
        saga = requests.get(f"{api_url}/sagas/{saga_id}", headers=bearer(), timeout=30).json()
        return saga["status"] in TERMINAL_SAGA

    with ConnectionsByRole(postgres_server, database) as connections:
        with ThreadPoolExecutor(32) as pool:
            sagas = list(pool.map(place, range(300)))
        for saga_id in sagas:
            wait_until(lambda s=saga_id: ended(s), 90, 0.1, f"saga {saga_id} to end")  # type: ignore[misc]

    print(f"most PostgreSQL connections at once, by application_name: {dict(connections.most)}")
    assert connections.most["bookmarket-worker"] <= DB_POOL_SIZE
    assert connections.most["bookmarket-sweeper"] == 1
    assert connections.most["bookmarket-api"] <= API_PROCESSES * API_DB_POOL_SIZE
    assert connections.most["bookmarket-worker"] >= 4, "the burst never kept the worker's pool busy"
    assert set(connections.most) <= {"bookmarket-api", "bookmarket-worker", "bookmarket-sweeper"}
