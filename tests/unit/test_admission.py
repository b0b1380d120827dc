"""Admission control at the API: a backlog of sagas waiting to pay turns new orders away cleanly."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from api.app import create_app
from domain.model import utcnow
from infra import repository as repo
from infra.tables import saga_steps
from services.admission import (
    MAX_RATE,
    MIN_RATE,
    MIN_SAMPLES,
    RATE_WINDOW_S,
    Admission,
    Pace,
    allowed_backlog,
    judge,
)
from tests.support import api_client
from tests.unit.fakes import RecordingPublisher, make_runtime


def test_orders_beyond_the_payment_backlog_limit_get_503_with_retry_after_and_create_nothing(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    rt.settings = replace(rt.settings, admission_max_waiting_payments=2, admission_retry_after_s=3)  # 3 > 2
    client = api_client(create_app(rt.settings, runtime=rt))
    body = {"customer_id": 9, "book_id": 1, "qty": 1}

    assert [client.post("/orders", json=body).status_code for _ in range(3)] == [202, 202, 202]
    client.application.extensions["bookmarket.admission"]._checked_at = float("-inf")  # no cached verdict
    refused = client.post("/orders", json=body)

    assert refused.status_code == 503 and refused.content_type == "application/problem+json"
    assert refused.headers["Retry-After"] == "3"
    assert "waiting for payment" in refused.get_json()["detail"]
    assert len(client.get("/customers/9/orders").get_json()) == 3
    assert client.get("/books").status_code == 200


def test_a_retried_post_with_a_known_idempotency_key_is_answered_even_when_full(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    rt.settings = replace(rt.settings, admission_max_waiting_payments=1)
    client = api_client(create_app(rt.settings, runtime=rt))
    body = {"customer_id": 9, "book_id": 1, "qty": 1}
    first = client.post("/orders", json=body, headers={"Idempotency-Key": "a"})
    client.post("/orders", json=body)

    client.application.extensions["bookmarket.admission"]._checked_at = float("-inf")
    again = client.post("/orders", json=body, headers={"Idempotency-Key": "a"})

    assert again.status_code == 202 and again.get_json()["id"] == first.get_json()["id"]
    assert client.post("/orders", json=body).status_code == 503


def test_an_order_committed_while_the_broker_is_down_is_accepted_and_left_for_the_sweeper(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, RecordingPublisher(fail=True))
    client = api_client(create_app(rt.settings, runtime=rt))

    response = client.post("/orders", json={"customer_id": 9, "book_id": 1, "qty": 1})

    assert response.status_code == 202
    steps = client.get(f"/sagas/{response.get_json()['saga_id']}").get_json()["steps"]
    pay = next(s for s in steps if s["name"] == "pay")
    assert pay["status"] == "PENDING"
    with rt.db.reading() as conn:
        assert repo.due_dispatches(conn, utcnow(), utcnow() - timedelta(seconds=30), 10) == [
            (response.get_json()["saga_id"], "pay")]


def _finish_pay_steps(rt: object, saga_ids: list[int]) -> None:
    with rt.db.transaction() as conn:  # type: ignore[attr-defined]
        for saga_id in saga_ids:
            conn.execute(sa.update(saga_steps).where(saga_steps.c.saga_id == saga_id, saga_steps.c.name == "pay")
                         .values(status="SUCCEEDED", finished_at=utcnow()))


@pytest.mark.parametrize(("max_wait_s", "admitted"), [(1, False), (10, True)])
def test_the_backlog_allowed_follows_the_payments_finished_in_the_last_ten_seconds(
    tmp_path: Path, max_wait_s: float, admitted: bool,
) -> None:
    rt = make_runtime(tmp_path)
    client = api_client(create_app(rt.settings, runtime=rt))
    placed = [client.post("/orders", json={"customer_id": 9, "book_id": 1, "qty": 1}).get_json() for _ in range(8)]
    _finish_pay_steps(rt, [p["saga_id"] for p in placed[:5]])  # 5 paid in the last 10 s: 0.5 a second; 3 wait
    rt.settings = replace(rt.settings, admission_max_waiting_payments=2, admission_max_wait_s=max_wait_s)

    verdict = judge(rt)

    # 3 waiting: over the floor of 2; under 10 s of the rate (5) but over 1 s of it (0.5 -> the floor)
    assert verdict.admitted is admitted
    if not admitted:
        assert verdict.reason == "over 2 orders are waiting for payment (about 1s of work at 0 payments/s)"


def test_payments_finished_longer_ago_than_the_window_do_not_count(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    client = api_client(create_app(rt.settings, runtime=rt))
    placed = [client.post("/orders", json={"customer_id": 9, "book_id": 1, "qty": 1}).get_json() for _ in range(8)]
    _finish_pay_steps(rt, [p["saga_id"] for p in placed[:5]])
    rt.settings = replace(rt.settings, admission_max_waiting_payments=2, admission_max_wait_s=10)
    rt.clock = lambda: utcnow() + timedelta(seconds=RATE_WINDOW_S + 1)

    assert judge(rt).admitted is False


@pytest.mark.parametrize(("rate", "wait", "floor", "allowed"), [(0, 10, 500, 500), (80, 10, 500, 800),
                                                                (80.5, 1, 20, 80), (3, 10, 0, 30)])
def test_the_allowed_backlog_is_the_rate_times_the_wait_never_under_the_floor(
    rate: float, wait: float, floor: int, allowed: int,
) -> None:
    assert allowed_backlog(rate, wait, floor) == allowed


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def admitted_in(pace: Pace, ticks: Ticks, seconds: float, per_s: int, answer_s: float) -> int:
    """Offer per_s orders a second for `seconds`; each admitted one is answered in answer_s. How many got in."""
    admitted = 0
    for _ in range(int(seconds * per_s)):
        ticks.now += 1 / per_s
        if pace.take():
            admitted += 1
            pace.observe(answer_s)
    return admitted


def test_orders_answered_within_the_target_are_never_paced() -> None:
    ticks = Ticks()
    pace = Pace(0.35, ticks)

    assert admitted_in(pace, ticks, 5, 400, answer_s=0.05) == 2000
    assert pace.rate == MAX_RATE


def test_slow_answers_cut_the_rate_and_the_orders_over_it_are_refused_until_answers_are_fast_again() -> None:
    ticks = Ticks()
    pace = Pace(0.35, ticks)

    slow = admitted_in(pace, ticks, 5, 200, answer_s=0.8)
    assert slow < 200 * 5 / 2 and pace.rate < 200  # cut well below the 200 a second offered
    cut_to = pace.rate

    admitted_in(pace, ticks, 15, 200, answer_s=0.05)
    assert pace.rate > 200 > cut_to  # fast answers let the rate climb back, a tenth per half second
    assert admitted_in(pace, ticks, 1, 200, answer_s=0.05) == 200


def test_a_few_slow_answers_of_a_process_that_is_hardly_busy_do_not_cut_the_rate() -> None:
    ticks = Ticks()
    pace = Pace(0.35, ticks)

    assert admitted_in(pace, ticks, 5, MIN_SAMPLES, answer_s=2.0) == 5 * MIN_SAMPLES  # under MIN_SAMPLES a window
    assert pace.rate == MAX_RATE


def test_a_paced_order_gets_503_with_retry_after_and_creates_nothing(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    rt.settings = replace(rt.settings, admission_retry_after_s=3)
    app = create_app(rt.settings, runtime=rt)
    ticks = Ticks()
    app.extensions["bookmarket.admission"] = Admission(0.35, clock=ticks)
    pace = app.extensions["bookmarket.admission"].pace
    pace.rate, pace._tokens = MIN_RATE, 0.0  # as after a run of slow answers
    client = api_client(app)

    refused = client.post("/orders", json={"customer_id": 9, "book_id": 1, "qty": 1})

    assert refused.status_code == 503 and refused.headers["Retry-After"] == "3"
    assert "answered quickly" in refused.get_json()["detail"]
    assert client.get("/customers/9/orders").get_json() == []
    ticks.now += 1 / MIN_RATE  # a token later, one gets in
    assert client.post("/orders", json={"customer_id": 9, "book_id": 1, "qty": 1}).status_code == 202
