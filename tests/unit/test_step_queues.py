"""STEP_QUEUES and WORKER_QUEUES: which queue each step travels on, which queues a worker consumes, and that a task
never runs inline a step routed to another queue (a worker group dedicated to payments ships nothing)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from domain.model import OrderStatus
from infra.broker import Publisher
from infra.config import Settings
from saga.order_saga import DEFINITIONS
from services.runtime import step_routes
from tests.unit.engine_fakes import Engine, engine_fixture


def settings(**env: str) -> Settings:
    return Settings.from_env({"SAGA_QUEUE": "saga", **env})


def test_without_step_queues_every_step_goes_to_the_saga_queue_and_a_worker_consumes_it_alone() -> None:
    s = settings()

    assert s.step_queues == {} and s.worker_queues == ()
    assert s.all_queues() == ("saga",) and s.consumed_queues() == ("saga",)
    assert step_routes(s.step_queues, DEFINITIONS.values()) == {}


def test_a_provider_routes_its_calls_and_their_undoing_and_a_step_name_wins_over_its_provider() -> None:
    s = settings(STEP_QUEUES="payment=bm.payment, delivery=bm.delivery,cancel_delivery=bm.undo")

    routes = step_routes(s.step_queues, DEFINITIONS.values())

    assert routes["pay"] == routes["cancel_payment"] == "bm.payment"
    assert routes["ship"] == "bm.delivery" and routes["cancel_delivery"] == "bm.undo"
    assert "notify" not in routes  # messaging stays on SAGA_QUEUE
    assert s.all_queues() == ("saga", "bm.payment", "bm.delivery", "bm.undo")
    assert s.consumed_queues() == s.all_queues()  # WORKER_QUEUES empty: a worker takes every queue


def test_worker_queues_names_what_a_dedicated_group_consumes() -> None:
    s = settings(STEP_QUEUES="payment=bm.payment", WORKER_QUEUES="bm.payment")

    assert s.consumed_queues() == ("bm.payment",)


@pytest.mark.parametrize("raw", ["payment", "payment=", "=q", "payment=q,,x"])
def test_a_malformed_step_queues_setting_stops_the_process_naming_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match="STEP_QUEUES"):
        settings(STEP_QUEUES=raw)


def test_a_step_queues_key_that_is_neither_a_provider_nor_a_step_is_refused() -> None:
    with pytest.raises(ValueError, match="payments"):
        step_routes({"payments": "q"}, DEFINITIONS.values())


def test_the_publisher_sends_each_step_to_its_routed_queue() -> None:
    app = Celery("routes", broker="memory://", set_as_current=False)
    sent: list[tuple[str, str]] = []

    def send_task(name: str, **options: Any) -> None:
        sent.append((name, options["queue"]))

    app.send_task = send_task  # type: ignore[method-assign]
    publisher = Publisher(app, "saga", routes={"pay": "bm.payment"})

    assert publisher.publish([(1, "pay"), (1, "ship"), (2, "pay")]) == []
    assert sent == [("saga.pay", "bm.payment"), ("saga.ship", "saga"), ("saga.pay", "bm.payment")]


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


def test_a_task_runs_inline_only_the_steps_of_its_own_queue(engine: Engine) -> None:
    engine.publisher.routes = step_routes({"payment": "bm.payment"}, DEFINITIONS.values())

    placed = engine.play()

    # pay ran on the payment queue and sent ship to the saga queue; ship ran notify inline (same queue)
    assert engine.runs_of(placed.saga_id) == ["pay", "ship"]
    assert engine.order(placed.order.id).status is OrderStatus.SHIPPED
    assert [engine.publisher.queue_for(step) for _, step in engine.publisher.sent] == ["bm.payment", "saga"]


@pytest.mark.parametrize(("env", "argv", "consumed"), [
    ({}, [], "saga"),
    ({"STEP_QUEUES": "payment=bm.payment"}, [], "saga,bm.payment"),
    ({"STEP_QUEUES": "payment=bm.payment", "WORKER_QUEUES": "bm.payment"}, [], "bm.payment"),
    ({"STEP_QUEUES": "payment=bm.payment"}, ["--queues", "saga"], "saga"),
])
def test_bookmarket_worker_consumes_worker_queues_or_every_queue(monkeypatch: pytest.MonkeyPatch,
                                                                  env: dict[str, str], argv: list[str],
                                                                  consumed: str) -> None:
    from cli import main as cli_main

    calls: list[list[str]] = []
    monkeypatch.setattr(cli_main, "_exec", lambda run: calls.append(run) or 0)
    for name in ("STEP_QUEUES", "WORKER_QUEUES", "SAGA_QUEUE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert cli_main.main(["worker", *argv]) == 0
    assert calls[0][calls[0].index("--queues") + 1] == consumed
