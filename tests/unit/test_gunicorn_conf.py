"""The API's gunicorn settings file: a SIGUSR2 re-exec of `python -m gunicorn` must run gunicorn as a module."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gunicorn

from api import gunicorn_conf
from cli.main import gunicorn_api

GUNICORN_MAIN = str(Path(gunicorn.__file__).with_name("__main__.py"))


def start_context_of(argv: list[str]) -> SimpleNamespace:
    """What gunicorn's Arbiter records at start: sys.executable, then sys.argv (under -m: the __main__.py path)."""
    assert argv[1:3] == ["-m", "gunicorn"]
    return SimpleNamespace(START_CTX={0: sys.executable, "args": [sys.executable, GUNICORN_MAIN, *argv[3:]]})


def test_the_usr2_re_exec_of_bookmarket_api_runs_gunicorn_as_a_module_with_the_same_options() -> None:
    argv = gunicorn_api("127.0.0.1", 8080)
    server = start_context_of(argv)
    gunicorn_conf.pre_exec(server)
    assert server.START_CTX["args"] == argv


def test_the_re_exec_command_imports_the_standard_librarys_http_where_the_script_form_cannot() -> None:
    """The API imports http.server (prometheus_client does): gunicorn --check-config loads an app from it."""
    server = start_context_of(gunicorn_api("127.0.0.1", 8080))
    check = ["--check-config", "http.server:SimpleHTTPRequestHandler"]
    broken = subprocess.run([sys.executable, GUNICORN_MAIN, *check], capture_output=True, text=True, timeout=60)
    assert "No module named 'http.server'" in broken.stdout + broken.stderr
    gunicorn_conf.pre_exec(server)
    fixed = subprocess.run([*server.START_CTX["args"][:3], *check], capture_output=True, text=True, timeout=60)
    assert fixed.returncode == 0 and "Error" not in fixed.stdout + fixed.stderr, fixed.stderr


def test_a_gunicorn_started_from_its_script_is_re_executed_unchanged() -> None:
    server = SimpleNamespace(START_CTX={"args": [sys.executable, "/usr/local/bin/gunicorn", "api.wsgi:app"]})
    gunicorn_conf.pre_exec(server)
    assert server.START_CTX["args"] == [sys.executable, "/usr/local/bin/gunicorn", "api.wsgi:app"]


def test_an_api_process_says_when_it_has_loaded_the_app_and_takes_connections() -> None:
    lines: list[str] = []
    worker = SimpleNamespace(pid=4242, log=SimpleNamespace(info=lambda msg, *args: lines.append(msg % args)))
    gunicorn_conf.post_worker_init(worker)
    assert lines == ["API process 4242 ready: app loaded, accepting connections"]
