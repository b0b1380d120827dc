"""Behind PgBouncer in transaction mode (Debian's 1.18: no prepared statements across transactions): with
DATABASE_PREPARED_STATEMENTS=off the real API (gunicorn), a real worker process (with its sweeper) and the sandbox
run a hundred orders at once to SHIPPED, a cancel, a support action (its transaction-scoped advisory lock), the
metrics scrape (SET LOCAL statement_timeout) and the sweeper's retries, over 5 server connections shared by all of
them; with psycopg's automatic preparation left on, the same kind of run fails on prepared statements."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import sqlalchemy as sa

from cli.main import gunicorn_api
from infra.migrate import upgrade
from tests.conftest import create_pg_database
from tests.integration.conftest import TERMINAL_SAGA, ConnectionsByRole, forget_queue, stack_env
from tests.support import (
    ProcessHandle,
    bearer,
    free_port,
    spawn,
    start_sandbox,
    start_worker,
    wait_http,
    wait_until,
)

pytestmark = pytest.mark.integration

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"  # Debian puts it in /usr/sbin
SERVER_CONNECTIONS = 5  # default_pool_size: every client of a database shares these
PREPARED_ERRORS = ("prepared statement", "_pg3_")


class PgBouncer:
    """PgBouncer in transaction mode on a free port, in front of the given PostgreSQL databases (trust auth). It
    refuses to run as root: as root it runs as `postgres`, its files in a folder that user owns."""

    def __init__(self, admin_url: str, databases: dict[str, str]) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bm-pgbouncer-"))
        server = sa.engine.make_url(admin_url)
        entries = "\n".join(f"{alias} = host={server.host} port={server.port} dbname={name} user={server.username}"
                            for alias, name in databases.items())
        (self.dir / "userlist.txt").write_text(f'"{server.username}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(f"""[databases]
{entries}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / 'userlist.txt'}
pool_mode = transaction
default_pool_size = {SERVER_CONNECTIONS}
max_client_conn = 500
logfile = {self.dir / 'pgbouncer.log'}
pidfile = {self.dir / 'pgbouncer.pid'}
""")
        self.user = server.username
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, alias: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{alias}"

    def start(self) -> None:
        argv = [PGBOUNCER, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            for path in self.dir.iterdir():
                shutil.chown(path, "postgres")
            argv = ["runuser", "-u", "postgres", "--", *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_until(self._answers, 15, 0.1, f"pgbouncer on {self.port} to accept connections")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited with {self.proc.returncode}: {self.log()}")
        try:
            with psycopg.connect(self.url(next(iter(self._aliases()))), connect_timeout=1) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def _aliases(self) -> list[str]:
        text = (self.dir / "pgbouncer.ini").read_text().split("[pgbouncer]")[0]
        return [line.split(" = ")[0] for line in text.splitlines() if " = " in line]

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Run:
    """A stack whose every process reaches PostgreSQL through PgBouncer."""
    api: ProcessHandle
    worker: ProcessHandle
    sandbox: ProcessHandle
    database: str  # its name on the PostgreSQL server (server connections are counted by it)

    def post(self, path: str, body: dict[str, Any], role: str = "storefront") -> requests.Response:
        return requests.post(f"{self.api.url}{path}", json=body, headers=bearer(role), timeout=30)

    def get(self, path: str, role: str = "support") -> Any:
        answer = requests.get(f"{self.api.url}{path}", headers=bearer(role), timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def place(self, customer_id: int) -> dict[str, Any]:
        answer = self.post("/orders", {"customer_id": customer_id, "book_id": 1, "qty": 1})
        assert answer.status_code == 202, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def behave(self, provider: str, **behavior: Any) -> None:
        requests.put(f"{self.sandbox.url}/{provider}/behavior", json=behavior, timeout=5).raise_for_status()

    def reset(self) -> None:
        requests.post(f"{self.sandbox.url}/reset", timeout=5).raise_for_status()

    def saga(self, saga_id: int) -> dict[str, Any]:
        saga: dict[str, Any] = self.get(f"/sagas/{saga_id}", "storefront")
        return saga

    def steps(self, saga_id: int) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.saga(saga_id)["steps"]}

    def wait_saga(self, saga_id: int, timeout: float = 60) -> dict[str, Any]:
        return wait_until(lambda: (s := self.saga(saga_id))["status"] in TERMINAL_SAGA and s, timeout, 0.1,
                          f"saga {saga_id} to end")

    def logs(self) -> str:
        return "\n".join(h.log.read_text(errors="replace") for h in (self.api, self.worker) if h.log)


@contextlib.contextmanager
def started(tmp: Path, url: str, database: str, prepared: str) -> Iterator[Run]:
    """Migrate through `url` (PgBouncer's), then start the sandbox, a worker (default thread pool, with its
    sweeper) and the API under gunicorn (two processes), all with DATABASE_PREPARED_STATEMENTS=`prepared`."""
    upgrade(url, prepared_statements=False)
    sandbox = start_sandbox(free_port(), tmp)
    metrics_dir = tmp / "prometheus"
    metrics_dir.mkdir()
    env = {**stack_env(url, sandbox.url, f"saga-bouncer-{uuid.uuid4().hex[:8]}"),
           "DATABASE_PREPARED_STATEMENTS": prepared, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
           "ADMISSION_TARGET_MS": "0"}  # a hundred orders at once on a busy test machine: no pacing
    worker = start_worker(env, tmp / "worker.log")
    port = free_port()
    api = ProcessHandle(spawn(gunicorn_api("127.0.0.1", port), env, tmp / "api.log"), f"http://127.0.0.1:{port}",
                        tmp / "api.log")
    try:
        wait_http(f"{api.url}/health/live", api.proc, 60)
        yield Run(api, worker, sandbox, database)
    finally:
        api.stop()
        worker.stop()
        sandbox.stop()
        forget_queue(env["REDIS_URL"], env["SAGA_QUEUE"])


@pytest.fixture(scope="module")
def bouncer(postgres_server: str) -> Iterator[tuple[PgBouncer, dict[str, str], str]]:
    """One PgBouncer in front of two fresh databases: `off` (the setting on) and `on` (psycopg's default)."""
    created = {alias: create_pg_database(postgres_server) for alias in ("off", "on")}
    names = {alias: sa.engine.make_url(url).database or "" for alias, (url, _) in created.items()}
    bouncer = PgBouncer(postgres_server, names)
    bouncer.start()
    try:
        yield bouncer, names, postgres_server
    finally:
        bouncer.stop()
        for _, drop in created.values():
            with contextlib.suppress(Exception):
                drop()


def place_many(run: Run, count: int) -> list[requests.Response]:
    with ThreadPoolExecutor(20) as pool:
        return list(pool.map(lambda i: run.post("/orders", {"customer_id": 1000 + i, "book_id": 1, "qty": 1}),
                             range(count)))


def test_through_pgbouncer_in_transaction_mode_everything_works_with_prepared_statements_off(
        bouncer: tuple[PgBouncer, dict[str, str], str], tmp_path: Path) -> None:
    pgbouncer, names, admin_url = bouncer
    with started(tmp_path, pgbouncer.url("off"), names["off"], "off") as run, \
            ConnectionsByRole(admin_url, names["off"]) as server:
        run.behave("payment", latency_ms=[20, 120])
        answers = place_many(run, 100)
        assert [a.status_code for a in answers] == [202] * 100, {a.status_code: a.text for a in answers}
        for answer in answers:
            saga = run.wait_saga(answer.json()["saga_id"])
            assert saga["status"] == "COMPLETED", saga
        assert {run.get(f"/orders/{a.json()['id']}", "storefront")["status"] for a in answers} == {"SHIPPED"}
        run.reset()

        # a cancel while the delivery is in flight compensates: the shipment and the charge are undone
        run.behave("delivery", latency_ms=[800, 800])
        order = run.place(2001)
        wait_until(lambda: run.steps(order["saga_id"])["ship"]["status"] == "RUNNING", 20, 0.05, "ship in flight")
        assert run.post(f"/orders/{order['id']}/cancel", {"reason": "changed my mind"}).status_code == 202
        assert run.wait_saga(order["saga_id"])["status"] == "COMPENSATED"
        assert run.get(f"/orders/{order['id']}", "storefront")["status"] == "CANCELLED"
        run.reset()

        # a failing message is retried after its backoff: the sweeper sends the retry
        run.behave("messaging", error_rate=1.0)
        order = run.place(2002)
        wait_until(lambda: run.steps(order["saga_id"])["notify"]["attempts"] >= 2, 30, 0.1, "notify retried")
        run.reset()
        saga = run.wait_saga(order["saga_id"])
        assert saga["status"] == "COMPLETED" and run.steps(order["saga_id"])["notify"]["status"] == "SUCCEEDED"

        # a support action (under its transaction-scoped advisory lock) retries a rejected message
        run.behave("messaging", reject=True)
        order = run.place(2003)
        run.wait_saga(order["saga_id"])
        run.reset()
        action = run.post(f"/admin/sagas/{order['saga_id']}/retry", {"reason": "messaging is back"}, "support")
        assert action.status_code == 200, action.text
        wait_until(lambda: run.steps(order["saga_id"])["notify"]["status"] == "SUCCEEDED", 30, 0.1, "notify sent")

        # the metrics scrape reads the database (SET LOCAL statement_timeout) through PgBouncer
        scrape = requests.get(f"{run.api.url}/metrics", timeout=10)
        assert scrape.status_code == 200
        assert 'bookmarket_scrape_error{source="database"} 0.0' in scrape.text

        logs = run.logs()
    assert "sweep: dispatched=" in logs  # the sweeper's transactions went through PgBouncer too
    assert not any(e in logs for e in PREPARED_ERRORS), [line for line in logs.splitlines() if "prepared" in line]
    assert 1 <= server.most_total <= SERVER_CONNECTIONS  # 2 API processes and a worker share 5 server connections


def test_through_pgbouncer_with_psycopgs_automatic_prepared_statements_the_same_run_fails(
        bouncer: tuple[PgBouncer, dict[str, str], str], tmp_path: Path) -> None:
    pgbouncer, names, _ = bouncer
    with started(tmp_path, pgbouncer.url("on"), names["on"], "on") as run:
        run.behave("payment", latency_ms=[20, 120])
        answers = place_many(run, 100)
        accepted = [a.json()["saga_id"] for a in answers if a.status_code == 202]

        def failing() -> bool:
            return all(e in run.logs() for e in PREPARED_ERRORS)

        wait_until(failing, 60, 0.5, "prepared statement errors")
        logs = run.logs()
    found = sorted(set(re.findall(r'prepared statement \\*"(_pg3_\d+)\\*" (does not exist|already exists)', logs)))
    print(f"{len(accepted)} of 100 orders accepted; the processes' logs name {found}")
    assert found and ("raised unexpected" in logs or "sweep failed" in logs)  # steps or sweeps failed on them
