"""gunicorn's settings file for the API (`gunicorn -c python:api.gunicorn_conf`): an API process that exits leaves
the metrics it shares with the others through PROMETHEUS_MULTIPROC_DIR, and its live gauges stop counting."""
from __future__ import annotations

from typing import Any

from infra.metrics import forget_process


def child_exit(_server: Any, worker: Any) -> None:
    forget_process(worker.pid)
