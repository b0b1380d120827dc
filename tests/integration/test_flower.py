"""Flower finds a saga's tasks and shows a failed attempt as a failed task: a real Flower process (`bookmarket
flower`, with FLOWER_BASIC_AUTH) and a real worker process on this test's own Redis (Flower watches every event on
its broker: a shared Redis would show other tests' sagas under the same ids), the sandbox providers, the API's app.

Task events stay off on the worker (TASK_EVENTS=0, the default): Flower turns them on while it watches.
"""
from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import requests

from api.app import create_app
from infra.config import Settings
from infra.migrate import upgrade
from tests.integration.conftest import TERMINAL_SAGA, stack_env
from tests.support import (
    ProcessHandle,
    RedisServer,
    Sandbox,
    api_client,
    free_port,
    spawn,
    start_sandbox,
    start_worker,
    wait_http,
    wait_until,
)

pytestmark = pytest.mark.integration
LOGIN = ("ops", "flower-test-password")


@dataclass
class Watched:
    flower: str
    env: dict[str, str]
    client: Any
    support: Any
    sandbox: Sandbox
    worker: ProcessHandle

    def tasks(self, search: str) -> dict[str, dict[str, Any]]:
        answer = requests.get(f"{self.flower}/api/tasks", params={"search": search}, auth=LOGIN, timeout=5)
        answer.raise_for_status()
        tasks: dict[str, dict[str, Any]] = answer.json()
        return tasks


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    tmp = tmp_path_factory.mktemp("flower")
    broker = RedisServer(tmp)
    broker.start()
    database_url = f"sqlite:///{tmp / 'bookmarket.db'}"
    upgrade(database_url)
    sandbox = start_sandbox(free_port(), tmp)
    flower_url = f"http://127.0.0.1:{free_port()}"
    env = {**stack_env(database_url, sandbox.url, f"saga-flower-{uuid.uuid4().hex[:8]}"), "REDIS_URL": broker.url,
           "FLOWER_BASIC_AUTH": ":".join(LOGIN), "FLOWER_URL": flower_url, "TASK_EVENTS": "0",
           "STEP_POLICIES": json.dumps({"*": {"base_s": 0.05, "cap_s": 0.2}, "pay": {"base_s": 1, "cap_s": 1}})}
    env.pop("FLOWER_UNAUTHENTICATED_API", None)
    worker = start_worker(env, tmp / "worker.log")
    flower = spawn([sys.executable, "-m", "cli.main", "flower", "--port", flower_url.rsplit(":", 1)[1]], env,
                   tmp / "flower.log")
    app = create_app(Settings.from_env(env))
    try:
        wait_http(f"{flower_url}/healthcheck", flower)
        # Flower switches the worker's task events on (a broadcast) as it starts
        wait_until(lambda: "enabled by remote" in worker.log.read_text(errors="replace") if worker.log else False,
                   30, 0.2, "Flower to turn the worker's task events on")
        yield Watched(flower_url, env, api_client(app), api_client(app, "support"), Sandbox(sandbox.url), worker)
    finally:
        ProcessHandle(flower).stop()
        worker.stop()
        sandbox.stop()
        app.extensions["bookmarket"].close()
        broker.stop()


def place_order_whose_first_payment_fails(watched: Watched) -> dict[str, Any]:
    """An order whose payment provider is down for its first attempt and back for its retry (1 s later)."""
    watched.sandbox.behave("payment", down=True)
    try:
        posted = watched.client.post("/orders", json={"customer_id": 1, "book_id": 1, "qty": 1}).get_json()
        wait_until(lambda: _step(watched, posted["saga_id"], "pay")["attempts"] >= 1, 10, 0.02, "a first attempt")
    finally:
        watched.sandbox.behave("payment", down=False)
    saga = wait_until(lambda: (s := watched.client.get(f"/sagas/{posted['saga_id']}").get_json())["status"]
                      in TERMINAL_SAGA and s, 30, 0.1, "the saga to end")
    assert saga["status"] == "COMPLETED"
    return dict(posted)


def _step(watched: Watched, saga_id: int, name: str) -> dict[str, Any]:
    saga = watched.client.get(f"/sagas/{saga_id}").get_json()
    return next(s for s in saga["steps"] if s["name"] == name)


def test_flower_finds_a_sagas_tasks_by_saga_id_and_shows_its_failed_attempt_as_a_failure(watched: Watched) -> None:
    posted = place_order_whose_first_payment_fails(watched)
    saga_id, order_id = posted["saga_id"], posted["id"]

    def both_attempts() -> list[dict[str, Any]] | None:
        found = [t for t in watched.tasks(f'"saga={saga_id} order"').values() if t["name"] == "saga.pay"]
        return found if {t["state"] for t in found} == {"FAILURE", "SUCCESS"} else None

    pay = sorted(wait_until(both_attempts, 20, 0.2, "Flower to show both pay tasks"), key=lambda t: t["state"])
    failed, succeeded = pay
    assert len(pay) == 2  # the failed task was acknowledged: not delivered again
    assert {t["uuid"] for t in watched.tasks(f"saga={saga_id}").values()} >= {t["uuid"] for t in pay}  # unquoted
    assert failed["args"] == succeeded["args"] == f"saga={saga_id} order={order_id} step=pay"
    assert "StepAttemptFailed" in failed["exception"]
    assert f"saga={saga_id} order={order_id} step=pay attempt=1 failed: payment answered 503" in failed["exception"]
    assert succeeded["result"].startswith(f"'saga={saga_id} order={order_id} step=pay attempt=2 StepSucceeded")

    log = watched.worker.log_tail(400)
    assert f"saga {saga_id} step pay attempt 1: StepFailed" in log  # the engine's line for the failed attempt
    assert "raised expected" not in log  # Celery's own task lines are left to DEBUG (workers/app.py)
    assert "Traceback" not in log  # `throws`: an expected failure is never logged with a traceback
    assert watched.sandbox.ledger("payment", order_id, "charge") != []
    queue = watched.env["SAGA_QUEUE"]
    client = redis.Redis.from_url(watched.env["REDIS_URL"])
    assert client.llen(queue) == 0
    assert [raw for raw in client.hvals("unacked") if json.loads(raw)[2] == queue] == []


def test_the_timeline_links_each_attempt_to_its_task_page_in_flower(watched: Watched) -> None:
    posted = place_order_whose_first_payment_fails(watched)
    timeline = watched.support.get(f"/admin/sagas/{posted['saga_id']}").get_json()
    pay = next(s for s in timeline["steps"] if s["name"] == "pay")
    links = [a["flower_url"] for a in pay["attempt_history"]]
    assert links == [f"{watched.flower}/task/{a['task_id']}" for a in pay["attempt_history"]] and len(links) == 2
    page = wait_until(lambda: (r := requests.get(links[0], auth=LOGIN, timeout=5)).status_code == 200 and r, 20,
                      0.2, "Flower's page of the failed attempt")
    assert "StepAttemptFailed" in page.text and pay["attempt_history"][0]["task_id"] in page.text


def test_flower_refuses_a_request_without_its_login(watched: Watched) -> None:
    for auth in (None, ("ops", "wrong")):
        assert requests.get(f"{watched.flower}/api/tasks", auth=auth, timeout=5).status_code == 401
        assert requests.get(f"{watched.flower}/", auth=auth, timeout=5).status_code == 401
    assert requests.get(f"{watched.flower}/api/tasks", auth=LOGIN, timeout=5).status_code == 200
