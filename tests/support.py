"""Helpers for tests that run real processes: free ports, the sandbox, Celery workers, polling."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
import requests
from flask import Flask
from flask.testing import FlaskClient

from cli.main import WORKER_THREADS, celery_worker, gunicorn_sandbox

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
# The API's bearer tokens in every test stack: BOOKMARKET_TOKENS gives each role one.
TEST_TOKENS = {"storefront": "storefront-test-token", "support": "support-test-token", "viewer": "viewer-test-token"}
# A second storefront caller (another shop front), named: its Idempotency-Keys are its own.
OTHER_STOREFRONT = ("other-shop", "other-storefront-test-token")
TOKENS_SETTING = ",".join([*(f"{role}={token}" for role, token in TEST_TOKENS.items()),
                           "storefront:{}={}".format(*OTHER_STOREFRONT)])


def bearer(role: str = "storefront") -> dict[str, str]:
    """The Authorization header of the test token of `role`."""
    return {"Authorization": f"Bearer {TEST_TOKENS[role]}"}


def api_client(app: Flask, role: str = "storefront") -> FlaskClient:
    """A test client of the API sending the test token of `role` with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = bearer(role)["Authorization"]
    return client


def other_storefront_client(app: Flask) -> FlaskClient:
    """A test client of the API sending the second storefront token (OTHER_STOREFRONT) with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {OTHER_STOREFRONT[1]}"
    return client


@contextlib.contextmanager
def rabbitmq_vhost(base_url: str = RABBITMQ_URL) -> Iterator[str]:
    """A fresh RabbitMQ vhost (rabbitmqctl on this machine) for one stack, deleted afterwards; yields its URL.
    Stacks must not share a vhost: Celery's remote-control queue of a worker (<hostname>.celery.pidbox) is
    exclusive on RabbitMQ, so two workers named alike (every test names its worker w1) would lock each other out."""
    vhost = f"bm-test-{uuid.uuid4().hex[:10]}"
    for argv in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        subprocess.run(["rabbitmqctl", "-q", *argv], check=True, capture_output=True, timeout=60)
    try:
        yield with_vhost(base_url, vhost)
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


def with_vhost(url: str, vhost: str) -> str:
    """`url` (amqp://user:password@host:port/...) on the vhost `vhost`."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/{vhost}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ProcessHandle:
    proc: subprocess.Popen[bytes]
    url: str = ""
    log: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the leader (it shuts its children down gracefully); SIGKILL the whole group after `timeout`."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 60) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=str(ROOT))


def wait_until(check: Callable[[], T], timeout: float = 30, interval: float = 0.1, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    wait_until(ready, timeout, 0.1, f"{url} to answer")


def start_sandbox(port: int, log_dir: Path | None = None, data_dir: Path | None = None) -> ProcessHandle:
    """The sandbox providers under gunicorn (one process, many threads), as `bookmarket up` runs them; their ledgers
    are kept in `data_dir` (SANDBOX_DATA_DIR) or, without one, in memory only."""
    log = (log_dir or Path(os.environ.get("TMPDIR", "/tmp"))) / f"sandbox-{port}.log"
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_DATA_DIR"}
    if data_dir is not None:
        env["SANDBOX_DATA_DIR"] = str(data_dir)
    proc = spawn(gunicorn_sandbox("127.0.0.1", port, graceful_s=1), env, log)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", proc)
    return ProcessHandle(proc, url, log)


def start_worker(env: dict[str, str], log: Path, threads: int = WORKER_THREADS, name: str = "w1") -> ProcessHandle:
    """A real Celery worker process as `bookmarket worker` starts it (Celery's thread pool, `threads` steps at
    once) on the given environment; it runs the recovery sweeper loop."""
    argv = celery_worker(threads, env["SAGA_QUEUE"], hostname=f"{name}@%h")
    proc = spawn(argv, env, log)
    handle = ProcessHandle(proc, log=log)
    wait_until(lambda: proc.poll() is not None or "ready." in log.read_text(errors="replace"), 60, 0.1,
               "the worker to be ready")
    if proc.poll() is not None:
        raise AssertionError(f"worker exited: {handle.log_tail()}")
    return handle


class RedisServer:
    """A redis-server without persistence on a free port; SIGKILL it and start it again on the same port."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir)]
        log = (self.dir / f"redis-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self.pings, 15, 0.05, f"redis-server on {self.port} to answer")

    def pings(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and accepted, nothing answers (a hung server, not a dead one)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()
            self.kill()


class Sandbox:
    """A small client for the sandbox's behaviour and ledgers."""

    def __init__(self, url: str) -> None:
        self.url = url

    def reset(self, ledgers: bool = False) -> None:
        """Default behaviours; with `ledgers`, also make the sandbox forget its ledgers and idempotency records."""
        requests.post(f"{self.url}/reset", params={"ledgers": str(ledgers).lower()}, timeout=5).raise_for_status()

    def behave(self, provider: str, **behavior: Any) -> None:
        requests.put(f"{self.url}/{provider}/behavior", json=behavior, timeout=5).raise_for_status()

    def ledger(self, provider: str, order_id: int | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        entries = requests.get(f"{self.url}/{provider}/ledger", timeout=5).json()
        return [e for e in entries
                if (order_id is None or e["order_id"] == order_id) and (kind is None or e["kind"] == kind)]
