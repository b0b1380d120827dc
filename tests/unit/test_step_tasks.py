"""What a step's task tells Flower: its arguments as saga=/order=/step=, what it ran as its result, and a failed
attempt as a failed task (StepAttemptFailed, raised once the engine has recorded everything, changing nothing of
what it records or retries). The real services on fakes (tests/unit/engine_fakes.py), and the real Celery app."""
from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import pytest

from infra import repository as repo
from infra.broker import Publisher, args_shown
from infra.config import Settings
from services.saga_search import timeline
from services.steps import StepAttemptFailed, run_task
from tests.unit.engine_fakes import Engine, make_engine
from tests.unit.fakes import settings_for
from workers.app import CELERY_TASK_LOGGERS, _configure_logging, create_celery


def recorded(engine: Engine, saga_id: int) -> dict[str, Any]:
    """What the engine recorded of a saga: its status, each step's state and attempts, what it published."""
    with engine.rt.db.reading() as conn:
        history = [(a.step, a.attempt, a.outcome, a.error) for a in repo.saga_attempts(conn, saga_id)]
    steps = {name: (s.status, s.attempts, s.error, s.available_at) for name, s in engine.steps(saga_id).items()}
    return {"status": engine.saga(saga_id).status, "steps": steps, "attempts": history,
            "published": list(engine.publisher.sent)}


def test_a_failed_attempt_raises_step_attempt_failed_and_records_exactly_what_run_step_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.steps.jitter", lambda: 0.5)  # the retry's backoff, the same in both engines
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    as_before, as_task = make_engine(tmp_path / "a"), make_engine(tmp_path / "b")
    for engine in (as_before, as_task):
        engine.providers.script("charge", "transient")
    placed = [engine.place() for engine in (as_before, as_task)]

    assert as_before.run(placed[0].saga_id, "pay") == "StepFailed"
    with pytest.raises(StepAttemptFailed) as failed:
        run_task(as_task.rt, placed[1].saga_id, "pay", "task-1")

    assert recorded(as_task, placed[1].saga_id) == recorded(as_before, placed[0].saga_id)
    assert as_task.steps(placed[1].saga_id)["pay"].status == "PENDING"  # the engine's retry, not Celery's
    error = failed.value
    assert (error.saga_id, error.order_id, error.step, error.attempt) == (placed[1].saga_id, placed[1].order.id,
                                                                          "pay", 1)
    assert str(error) == (f"saga={placed[1].saga_id} order={placed[1].order.id} step=pay attempt=1 failed: "
                          "charge answered 503: busy")
    assert repr(pickle.loads(pickle.dumps(error))) == f"StepAttemptFailed({str(error)!r})"  # as Celery sends it
    for engine in (as_before, as_task):
        engine.rt.close()


def test_a_task_that_succeeds_names_the_saga_the_order_and_each_attempt_it_ran(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    placed = engine.place()
    answer = run_task(engine.rt, placed.saga_id, "pay", "task-1")
    assert answer == (f"saga={placed.saga_id} order={placed.order.id} step=pay attempt=1 StepSucceeded; "
                      "step=ship attempt=1 StepSucceeded; step=notify attempt=1 StepSucceeded")
    assert run_task(engine.rt, placed.saga_id, "pay", "task-2") == "not claimed"
    engine.rt.close()


def test_a_task_that_claims_nothing_says_so_in_its_own_log_line(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(tmp_path)
    placed = engine.play()
    with caplog.at_level(logging.INFO, logger="services.steps"):
        assert run_task(engine.rt, placed.saga_id, "pay", "late") == "not claimed"
    assert f"saga {placed.saga_id} step pay: not claimed" in caplog.text
    engine.rt.close()


@pytest.mark.parametrize(("level", "shown"), [("INFO", logging.WARNING), (logging.INFO, logging.WARNING),
                                              ("WARNING", logging.WARNING), ("DEBUG", logging.NOTSET)])
def test_celerys_own_task_lines_are_left_to_debug_as_every_step_outcome_has_its_line(
        level: str | int, shown: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers.app.configure_logging", lambda *_: None)  # the root handler is not this test's
    settings = settings_for("sqlite://")
    try:
        _configure_logging(settings, level)
        assert {logging.getLogger(name).level for name in CELERY_TASK_LOGGERS} == {shown}
    finally:
        for name in CELERY_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_each_attempt_in_the_timeline_links_to_its_task_in_flower_when_flower_url_is_set(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, flower_url="https://flower.example.com")
    engine.providers.script("charge", "transient")
    placed = engine.play()
    links = [a["flower_url"] for s in timeline(engine.rt, placed.saga_id)["steps"] if s["name"] == "pay"
             for a in s["attempts_list"]]
    assert links == [f"https://flower.example.com/task/{task}" for task in ("task-1", "task-2")]
    engine.rt.settings = settings_for(engine.rt.settings.database_url)  # FLOWER_URL unset: no links
    assert {a["flower_url"] for s in timeline(engine.rt, placed.saga_id)["steps"] for a in s["attempts_list"]} \
        == {None}
    engine.rt.close()


class SendingApp:
    """Records what a Publisher asks Celery to send."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.producer_pool = self

    def acquire(self, **_: Any) -> SendingApp:
        return self

    def __enter__(self) -> SendingApp:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append({"name": name, **options})


def test_a_step_message_reads_saga_order_and_step_in_flower_and_carries_only_the_saga_id() -> None:
    app = SendingApp()
    assert Publisher(app, "saga").publish([(12, "pay"), (13, "ship")], {12: 34}) == []  # type: ignore[arg-type]
    assert [(m["name"], m["args"], m["argsrepr"]) for m in app.sent] == [
        ("saga.pay", [12], "saga=12 order=34 step=pay"), ("saga.ship", [13], "saga=13 step=ship")]
    assert args_shown(12, "pay", 34) == "saga=12 order=34 step=pay"


def test_a_step_task_expects_step_attempt_failed_and_acknowledges_it_without_a_retry() -> None:
    app = create_celery(settings_for("sqlite://"))
    task = app.tasks["saga.pay"]
    assert task.throws == (StepAttemptFailed,)  # logged as an expected error, without a traceback
    assert task.acks_late and app.conf.task_acks_on_failure_or_timeout  # a raised error is acked: not redelivered
    assert not getattr(task, "autoretry_for", ())  # Celery never retries it: the engine decides retries


def test_flower_basic_auth_must_be_user_colon_password_and_config_shows_no_password() -> None:
    from cli.main import config_json

    with pytest.raises(ValueError, match="FLOWER_BASIC_AUTH"):
        Settings.from_env({"FLOWER_BASIC_AUTH": "justauser"})
    settings = Settings.from_env({"FLOWER_BASIC_AUTH": "ops:s3cret,support:hunter2"})
    assert settings.flower_basic_auth == "ops:s3cret,support:hunter2"
    shown = config_json(settings)
    assert '"flower_basic_auth": "ops:***,support:***"' in shown and "s3cret" not in shown
