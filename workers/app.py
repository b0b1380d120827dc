"""The Celery application with Book Market's tasks: one task per provider step (`saga.pay`...) and the sweeper."""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from celery import Celery, Task
from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from infra import metrics, tracing
from infra.broker import REQUEST_ID, make_celery, task_name
from infra.config import Settings
from infra.logs import configure_logging, log_context
from infra.providers import ProviderReply
from services.effects import StepEffects
from services.retention import retention_pass
from services.runtime import Runtime, build_runtime, configured_definitions, provider_steps
from services.steps import StepAttemptFailed, run_task
from services.sweeper import sweep
from workers.heartbeat import Heartbeat
from workers.sweeper_loop import SweeperLoop

log = logging.getLogger(__name__)


class _Holder:
    """The per-process runtime, built lazily after the fork so no connection is shared between processes."""

    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.settings = settings
        self.celery = celery
        self.runtime: Runtime | None = None
        self.draining = threading.Event()
        self._lock = threading.Lock()  # a pool of threads builds one runtime, not one per thread

    def get(self) -> Runtime:
        runtime = self.runtime
        if runtime is not None:
            return runtime
        with self._lock:
            if self.runtime is None:
                built = build_runtime(self.settings, self.celery)
                built.steps = poisoned(built.steps, self.settings.chaos_poison_steps)
                built.draining = self.draining
                self.runtime = built
            return self.runtime

    def reset(self, **_: Any) -> None:
        self.runtime = None

    def drain(self, **_: Any) -> None:
        """The worker is shutting down: running tasks finish their provider call (PROVIDER_TIMEOUT_S at most) and
        send their saga's next step instead of running it. Whatever still runs after WORKER_SHUTDOWN_GRACE_S is
        left behind: the process exits, those steps' leases run out and the sweeper of another worker (or of this
        one once restarted) takes them back; their messages, never acknowledged, come back too."""
        if self.draining.is_set():
            return
        grace = self.settings.shutdown_grace_s
        log.info("shutting down: running steps finish their call (up to %gs) and hand the next step to the broker",
                 grace)
        self.draining.set()
        timer = threading.Timer(grace, self._give_up, args=(grace,))
        timer.daemon = True
        timer.start()

    @staticmethod
    def _give_up(grace: float) -> None:
        log.error("steps still running %gs after the shutdown began: exiting; their leases expire and the sweeper "
                  "takes them back", grace)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(75)


def poisoned(steps: Mapping[str, StepEffects], poison: Mapping[str, str]) -> dict[str, StepEffects]:
    """CHAOS_POISON_STEPS: make named steps raise every time, or kill their process, for fault tests."""
    def sabotage(step: str, how: str) -> Any:
        def call(*_: object) -> ProviderReply:
            if how == "crash":
                log.error("CHAOS: step %s kills its worker process", step)
                os._exit(13)
            raise RuntimeError(f"CHAOS: step {step} is poisoned")
        return call

    return {name: replace(effects, call=sabotage(name, poison[name])) if name in poison else effects
            for name, effects in steps.items()}


def lower_priority(nice: int) -> None:
    """WORKER_NICE: run the steps below the API's CPU priority. When the machine is saturated, the front door keeps
    answering quickly (a fast 202 or 503) and the workers take the CPU left; admission then lets in what the workers
    finish. Processes spawned later (prefork children) inherit it."""
    if nice > 0:
        os.nice(nice)
        log.info("worker CPU priority lowered by %d (WORKER_NICE)", nice)


def create_celery(settings: Settings | None = None) -> Celery:
    """Build the Celery app and register the step tasks and the sweeper on it."""
    settings = settings or Settings.from_env()
    definitions = configured_definitions(settings.step_policies)  # a step the step table lacks stops us here
    app = make_celery(settings)
    holder = _Holder(settings, app)
    worker_init.connect(lambda **_: lower_priority(settings.worker_nice), weak=False)
    worker_init.connect(lambda **_: metrics.serve(settings.worker_metrics_port), weak=False)
    worker_process_init.connect(holder.reset, weak=False)
    worker_init.connect(lambda sender=None, **_: _trace_worker(settings, sender), weak=False)
    worker_process_init.connect(lambda **_: tracing.configure(settings, "bookmarket-worker"), weak=False)
    worker_shutting_down.connect(holder.drain, weak=False)
    setup_logging.connect(lambda loglevel=None, **_: _configure_logging(settings, loglevel or "INFO"), weak=False)
    heartbeat = Heartbeat(settings.worker_heartbeat_file, settings.worker_heartbeat_s)
    worker_ready.connect(heartbeat.start, weak=False)
    worker_shutting_down.connect(heartbeat.stop, weak=False)
    for step in provider_steps(definitions.values()):
        _register_step(app, holder, step)

    if settings.sweep_in_worker:
        loop = SweeperLoop(settings)
        worker_ready.connect(loop.start, weak=False)
        worker_shutdown.connect(loop.stop, weak=False)

    @app.task(name="saga.sweep", ignore_result=True, acks_late=False, shared=False)
    def sweep_task() -> dict[str, int]:
        report = sweep(holder.get())
        return {"dispatched": report.dispatched, "recovered": report.recovered, "parked": report.parked,
                "forgotten_keys": report.forgotten_keys}

    @app.task(name="saga.retention", ignore_result=True, acks_late=False, shared=False)
    def retention_task() -> dict[str, object]:
        rt = holder.get()
        return retention_pass(rt.db, settings.retention_days, settings.retention_batch, settings.retention_mode,
                              settings.retention_max_batches, rt.clock).as_dict()

    app.conf.bookmarket_holder = holder
    return app


def request_id(task: Task) -> str | None:
    """The request id the publisher put in the message's headers (a worker reads custom headers as request
    attributes; `apply` keeps them under `headers`)."""
    found = task.request.get(REQUEST_ID) or (task.request.headers or {}).get(REQUEST_ID)
    return str(found) if found else None


def _trace_worker(settings: Settings, worker: Any) -> None:
    """Tracing once per worker process: now on the thread pool; in each child, after the fork, on prefork (the
    batch span processor's thread does not survive a fork)."""
    pool = str(getattr(worker, "pool_cls", "prefork"))
    if "prefork" not in pool and "processes" not in pool:
        tracing.configure(settings, "bookmarket-worker")


# Celery's own line for each task received and each task ended ("Task saga.pay[...] received", "... succeeded in
# 0.4s: ..."): every step's outcome has its own line already (services.steps: saga, order, step, attempt, outcome),
# so at INFO these two repeat it; under load they were two of a worker's five lines per saga and a tenth of its CPU
# went to logging. They stay at DEBUG (`--loglevel DEBUG`), and an unexpected error in a task is logged either way.
CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def _configure_logging(settings: Settings, level: int | str) -> None:
    configure_logging(settings.log_format, level)
    numeric = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
    debug = isinstance(numeric, int) and numeric <= logging.DEBUG
    for name in CELERY_TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)


def _register_step(app: Celery, holder: _Holder, step: str) -> None:
    def run(task: Task, saga_id: int) -> str:
        tracing.tag_task(int(saga_id), step)
        with log_context(request_id=request_id(task)):
            return run_task(holder.get(), int(saga_id), step, task.request.id)

    run.__name__ = f"run_{step}"
    run.__doc__ = (f"Run step {step!r} of a saga (ids only; a repeat does nothing). A failed attempt, once recorded, "
                   "raises StepAttemptFailed: an expected error (no traceback), acknowledged, never retried by Celery.")
    app.task(name=task_name(step), bind=True, throws=(StepAttemptFailed,), shared=False)(run)  # on this app only
