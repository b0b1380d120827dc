"""The support API under /admin, in process on SQLite with fake providers: status codes, problems, paging, the
OpenAPI document."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from saga.order_saga import ORDER_SAGA
from tests.support import api_client
from tests.unit.engine_fakes import Engine, engine_fixture
from tests.unit.test_api import assert_problem

PAY_TRIES = ORDER_SAGA.step("pay").retry.max_attempts


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


@pytest.fixture
def client(engine: Engine) -> FlaskClient:
    return api_client(create_app(engine.rt.settings, runtime=engine.rt), "support")


def parked(engine: Engine, customer_id: int = 7) -> int:
    engine.providers.script("charge", *["lost"] * PAY_TRIES)
    placed = engine.place(customer_id=customer_id)
    engine.settle()
    return placed.saga_id


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def test_find_a_parked_saga_retry_it_and_read_the_trail(client: FlaskClient, engine: Engine) -> None:
    saga_id = parked(engine)
    engine.place()
    engine.settle()

    found = ok(client.get("/admin/sagas?status=FAILED&failing_step=pay"))
    assert [s["id"] for s in found] == [saga_id] and found[0]["failing_step"] == "pay"
    assert ok(client.get("/admin/sagas/counts"))["by_status"] == {"FAILED": 1, "COMPLETED": 1}
    timeline = ok(client.get(f"/admin/sagas/{saga_id}"))
    assert timeline["state"] == "FAILED:pay" and "retry" in timeline["actions"]
    history = timeline["steps"][0]["attempt_history"]
    assert [(a["attempt"], a["outcome"], a["outcome_unknown"]) for a in history] == [
        (n, "FAILED", True) for n in range(1, PAY_TRIES + 1)]
    assert all(a["task_id"] and "did not answer" in a["error"] for a in history)
    assert timeline["steps"][1]["local"] is True and timeline["steps"][1]["attempt_history"] == []

    done = ok(client.post(f"/admin/sagas/{saga_id}/retry", json={"reason": "provider confirmed"}))
    engine.settle()

    assert (done["state_before"], done["state_after"]) == ("FAILED:pay", "RUNNING")
    assert ok(client.get(f"/admin/sagas/{saga_id}"))["status"] == "COMPLETED"
    [entry] = ok(client.get(f"/admin/audit?saga_id={saga_id}"))
    assert (entry["action"], entry["reason"], entry["outcome"], entry["actor"], entry["role"]) == (
        "retry", "provider confirmed", "done", "support", "support")
    assert ok(client.get("/admin/audit"))[0]["id"] == entry["id"]


def test_refusals_are_problems(client: FlaskClient, engine: Engine) -> None:
    placed = engine.place()
    engine.settle()
    body = assert_problem(client.post(f"/admin/sagas/{placed.saga_id}/retry", json={"reason": "why not"}), 409)
    assert body["state"] == "COMPLETED" and body["saga_id"] == placed.saga_id
    assert_problem(client.post("/admin/sagas/999/retry", json={"reason": "why not"}), 404)
    assert "reason" in assert_problem(client.post(f"/admin/sagas/{placed.saga_id}/skip", json={}), 422)["errors"]
    assert_problem(client.post(f"/admin/sagas/{placed.saga_id}/explode", json={"reason": "why not"}), 404)
    assert_problem(client.get("/admin/sagas?status=BROKEN"), 422)
    assert_problem(client.get("/admin/sagas?since=yesterday"), 422)
    assert_problem(client.get("/admin/bulk/nope"), 404)
    assert_problem(client.put("/admin/audit"), 405)


def test_a_bulk_dry_run_then_its_run_in_batches(client: FlaskClient, engine: Engine) -> None:
    ids = [parked(engine, customer_id=c) for c in (1, 2, 3)]
    plan = ok(client.post("/admin/bulk", json={"action": "retry", "reason": "provider back",
                                               "filter": {"status": ["FAILED"], "failing_step": "pay"}}), 201)
    assert plan["total"] == 3 and plan["done"] == 0 and not plan["finished"]
    assert [s["saga_id"] for s in plan["sagas"]] == sorted(ids, reverse=True)
    page = ok(client.get(f"/admin/bulk/{plan['token']}?page=2&page_size=2"))
    assert [s["saga_id"] for s in page["sagas"]] == [min(ids)]

    first = ok(client.post(f"/admin/bulk/{plan['token']}/run", json={"batch_size": 2}))
    last = ok(client.post(f"/admin/bulk/{plan['token']}/run", json={}))
    engine.settle()

    assert (first["done"], last["done"], last["touched"], last["finished"]) == (2, 3, 3, True)
    assert len(first["results"]) == 2 and len(last["results"]) == 1
    assert all(ok(client.get(f"/admin/sagas/{i}"))["status"] == "COMPLETED" for i in ids)
    assert len(ok(client.get(f"/admin/audit?bulk_token={plan['token']}"))) == 3
    assert_problem(client.post("/admin/bulk", json={"action": "explode", "reason": "x y z", "filter": {}}), 422)


def test_the_openapi_document_lists_the_support_api(client: FlaskClient) -> None:
    paths = ok(client.get("/openapi.json"))["paths"]
    assert {"/admin/sagas", "/admin/sagas/counts", "/admin/sagas/{saga_id}", "/admin/sagas/{saga_id}/{action}",
            "/admin/bulk", "/admin/bulk/{token}", "/admin/bulk/{token}/run", "/admin/audit"} <= set(paths)
    assert "409" in paths["/admin/sagas/{saga_id}/{action}"]["post"]["responses"]


def test_viewers_read_support_acts_storefronts_and_strangers_are_kept_out(engine: Engine) -> None:
    saga_id = parked(engine)
    app = create_app(engine.rt.settings, runtime=engine.rt)
    viewer, storefront = api_client(app, "viewer"), api_client(app, "storefront")
    for path in ("/admin/sagas", "/admin/sagas/counts", f"/admin/sagas/{saga_id}", "/admin/audit"):
        assert viewer.get(path).status_code == 200, path
        assert_problem(storefront.get(path), 403)
        response = app.test_client().get(path)
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(viewer.post(f"/admin/sagas/{saga_id}/retry", json={"reason": "let me try"}), 403)
    assert_problem(viewer.post("/admin/bulk", json={"action": "retry", "reason": "all of them", "filter": {}}), 403)
    assert_problem(storefront.post(f"/admin/sagas/{saga_id}/retry", json={"reason": "let me try"}), 403)
    assert engine.saga(saga_id).status == "FAILED"  # nothing was done
    spec = ok(app.test_client().get("/openapi.json"))["paths"]
    assert spec["/admin/sagas"]["get"]["x-roles"] == ["support", "viewer"]
    assert spec["/admin/sagas/{saga_id}/{action}"]["post"]["x-roles"] == ["support"]
