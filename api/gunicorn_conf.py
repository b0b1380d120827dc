"""gunicorn's settings file for the API (`gunicorn -c python:api.gunicorn_conf`): an API process that exits leaves
the metrics it shares with the others through PROMETHEUS_MULTIPROC_DIR, and its live gauges stop counting; a
SIGUSR2 (a new master on the same socket, for a rolling replacement of every API process) re-executes gunicorn
the way it was started."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from infra.metrics import forget_process


def child_exit(_server: Any, worker: Any) -> None:
    forget_process(worker.pid)


def post_worker_init(worker: Any) -> None:
    """An API process has loaded the app and takes connections from now on: a rolling replacement (USR2, then TERM
    to the old master) waits for this line of every new process before stopping the old ones, or the requests of
    those seconds wait in the socket's backlog while the new processes still import the app."""
    worker.log.info("API process %s ready: app loaded, accepting connections", worker.pid)


def pre_exec(server: Any) -> None:
    """Before SIGUSR2's re-exec: gunicorn re-runs `sys.executable` + `sys.argv`, which under `python -m gunicorn`
    (how `bookmarket api` starts it) names gunicorn/__main__.py as a script; run that way, its folder comes first on
    sys.path and gunicorn's own `http` package hides the standard library's (the new master dies on
    `No module named 'http.server'` and the old one keeps serving alone). Re-run it as a module instead."""
    args = server.START_CTX["args"]
    script = Path(args[1]) if len(args) > 1 else Path()
    if script.name == "__main__.py" and script.parent.name == "gunicorn":
        server.START_CTX["args"] = [args[0], "-m", "gunicorn", *args[2:]]
