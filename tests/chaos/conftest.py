"""The chaos stack: a throwaway PostgreSQL and redis-server (so the machine's shared services stay up), a sandbox,
real Celery worker processes with the sweeper, the API's Flask test client, a workload of orders and cancels,
and the invariants every scenario must leave behind.

Each scenario gets a fresh database, a fresh queue name and a fresh sandbox (fresh ledgers), on a PostgreSQL
cluster shared by the chaos session and a redis-server of its own.
"""
from __future__ import annotations

import contextlib
import glob
import heapq
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from api.app import create_app
from infra.config import Settings
from infra.db import normalize_url
from infra.migrate import upgrade
from tests.integration.conftest import stack_env
from tests.support import (
    ProcessHandle,
    RedisServer,
    Sandbox,
    api_client,
    free_port,
    start_sandbox,
    start_worker,
    wait_until,
)

TERMINAL = ("COMPLETED", "COMPENSATED")
PARKED = "FAILED"
DRAIN_TIMEOUT_S = 120

# The settings every chaos scenario runs with (on top of the integration stack's environment).
CHAOS_ENV = {
    "STEP_LEASE_S": "5",
    "PROVIDER_TIMEOUT_S": "2",
    "REDISPATCH_AFTER_S": "3",
    "SWEEP_INTERVAL_S": "0.5",
    "MAX_RECOVERIES": "5",
    "BREAKER_FAIL_MAX": "1000",
    "STEP_POLICIES": json.dumps({"*": {"base_s": 0.05, "cap_s": 0.5}}),
}

NOT_CLAIMED = re.compile(r"saga \d+ step \w+: not claimed")


# --- throwaway servers ---------------------------------------------------------------------------------------------
def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        pytest.fail("the chaos suite needs PostgreSQL's server binaries under /usr/lib/postgresql/*/bin",
                    pytrace=False)
    return Path(found[-1]).parent


class PostgresServer:
    """A PostgreSQL cluster in a temporary folder, on a free port; it can be stopped (immediate) and started."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        # Short path: the unix socket lives in it too.
        self.dir = Path(tempfile.mkdtemp(prefix="bm-chaos-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_postgres = ["runuser", "-u", "postgres", "--"]

    def _pg(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        argv = [*self.as_postgres, str(self.bin / tool), *args]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
        return done

    def _must(self, tool: str, *args: str) -> None:
        done = self._pg(tool, *args)
        if done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({done.returncode}): "
                                 f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}\n"
                                 f"{self.log_tail()}")

    def init(self) -> None:
        self._must("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        # fsync=off only: a commit the server acknowledged must survive an immediate stop (synchronous_commit=off
        # would lose acknowledged commits on `pg_ctl stop -m immediate` and fake a lost order).
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=300")
        self._must("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "immediate") -> None:
        self._must("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return self._pg("pg_ctl", "-D", str(self.data), "status").returncode == 0

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"bm_chaos_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(normalize_url(self.url()), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster, started, and destroyed afterwards."""
    server = PostgresServer()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def chaos_postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the chaos session (each scenario creates its own database)."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def chaos_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway redis-server for one scenario."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- the stack -----------------------------------------------------------------------------------------------------
@dataclass
class ChaosStack:
    name: str
    tmp: Path
    env: dict[str, str]
    settings: Settings
    app: Any
    sandbox: Sandbox
    postgres: PostgresServer
    redis: RedisServer
    engine: sa.Engine
    workers: dict[str, ProcessHandle] = field(default_factory=dict)
    beat_worker: str | None = None
    logs: list[Path] = field(default_factory=list)
    incarnations: Counter[str] = field(default_factory=Counter)

    def start_worker(self, name: str, beat: bool = False) -> ProcessHandle:
        """A worker process as `bookmarket worker` starts it (Celery's thread pool, the default threads); every
        worker runs the sweeper loop (`beat` is only a label now)."""
        self.incarnations[name] += 1
        run = self.incarnations[name]
        log = self.tmp / f"worker-{name}-{run}.log"
        self.logs.append(log)
        handle = start_worker(self.env, log, name=f"{name}r{run}")
        handle.extra.update(beat=beat, hostname=f"{name}r{run}@{socket.gethostname()}")
        if beat:
            self.beat_worker = name
        self.workers[name] = handle
        return handle

    def running_steps(self) -> int:
        """Steps a worker holds right now (claimed, its provider call under way or about to be)."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM saga_steps WHERE status = 'RUNNING'")).scalar_one())

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker process (its whole process group): every step its threads were running is cut off."""
        handle = self.workers[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(handle.proc.pid, signal.SIGKILL)
        handle.proc.wait()

    def client(self) -> Any:
        return api_client(self.app)

    def open_sagas(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM sagas WHERE status NOT IN ('COMPLETED', 'COMPENSATED', 'FAILED')"
            )).scalar_one())

    def not_claimed(self) -> int:
        """Worker log lines where a step task found nothing to claim: a duplicate or late delivery prevented."""
        return sum(len(NOT_CLAIMED.findall(log.read_text(errors="replace"))) for log in self.logs if log.exists())

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for log in self.logs:
            if log.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                parts.append(f"--- {log.name} ---\n{tail}")
        return "\n".join(parts)


@contextmanager
def chaos_stack(name: str, tmp: Path, postgres: PostgresServer, redis_server: RedisServer,
                workers: tuple[tuple[str, bool], ...] = (("w1", True),),
                **overrides: str) -> Iterator[ChaosStack]:
    """A fresh database and queue, a sandbox, the given workers (name, beat) and the API."""
    postgres.ensure_running()
    database_url = postgres.create_database()
    upgrade(database_url)
    sandbox = start_sandbox(free_port(), tmp)
    queue = f"saga-chaos-{name}-{uuid.uuid4().hex[:8]}"
    env = {**stack_env(database_url, sandbox.url, queue), "REDIS_URL": redis_server.url, **CHAOS_ENV, **overrides}
    settings = Settings.from_env(env)
    app = create_app(settings)
    engine = sa.create_engine(normalize_url(database_url), pool_pre_ping=True)
    stack = ChaosStack(name, tmp, env, settings, app, Sandbox(sandbox.url), postgres, redis_server, engine)
    try:
        for worker_name, beat in workers:
            stack.start_worker(worker_name, beat=beat)
        yield stack
    finally:
        for handle in stack.workers.values():
            handle.stop(timeout=10)
        sandbox.stop()
        with contextlib.suppress(Exception):
            app.extensions["bookmarket"].close()
        engine.dispose()


# --- the workload --------------------------------------------------------------------------------------------------
@dataclass
class Workload:
    """Orders posted through the API by a few client threads at a steady rate until `orders` are accepted, and about
    10% of the accepted ones cancelled at random moments. A 503 is not an accepted order (counted in `refused`; that
    client backs off `backoff_s` before its next order); a cancel answered 503 is retried like a client would."""

    stack: ChaosStack
    orders: int = 200
    max_posts: int = 600
    backoff_s: float = 0.5
    rate_per_s: float = 20.0
    clients: int = 4
    cancel_fraction: float = 0.1
    cancel_delay_s: tuple[float, float] = (0.0, 6.0)
    seed: int = 0
    accepted: dict[int, dict[str, Any]] = field(default_factory=dict)
    refused: int = 0
    posted: int = 0
    errors: list[str] = field(default_factory=list)
    cancels: dict[int, int] = field(default_factory=dict)
    started_at: float = 0.0
    posting_done_at: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._next = 0
        self._in_flight = 0
        self._cancel_queue: list[tuple[float, int]] = []
        self._threads: list[threading.Thread] = []
        self._posting_left = self.clients
        self._stop_cancels = threading.Event()

    def start(self) -> Workload:
        self.started_at = time.monotonic()
        self._threads = [threading.Thread(target=self._post_loop, name=f"client-{i}", daemon=True)
                         for i in range(self.clients)]
        self._threads.append(threading.Thread(target=self._cancel_loop, name="canceller", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def join(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.1))
            if thread.is_alive():
                raise AssertionError(f"the workload's {thread.name} thread is still running after {timeout}s")

    def wait_posted(self, timeout: float = 180) -> None:
        """Return once every order has been posted (a fault that lasts the whole run ends here)."""
        wait_until(lambda: self.posting_done_at, timeout, 0.1, "the workload to post every order")

    def _take(self) -> int | None:
        with self._lock:
            if len(self.accepted) + self._in_flight >= self.orders or self._next >= self.max_posts:
                return None
            self._in_flight += 1
            index = self._next
            self._next += 1
            return index

    def _post_loop(self) -> None:
        client = self.stack.client()
        rng = random.Random(f"{self.seed}-{threading.current_thread().name}")
        while (index := self._take()) is not None:
            due = self.started_at + index / self.rate_per_s
            time.sleep(max(due - time.monotonic(), 0))
            body = {"customer_id": rng.randint(1, 50), "book_id": rng.randint(1, 6), "qty": rng.randint(1, 3)}
            key = f"chaos-{self.stack.name}-{index}"
            try:
                response = client.post("/orders", json=body, headers={"Idempotency-Key": key})
                status = response.status_code
            except Exception as exc:  # noqa: BLE001 - recorded; the checks fail on it
                status, response = -1, exc
            with self._lock:
                self.posted += 1
                self._in_flight -= 1
                if status == 202:
                    order = response.get_json()
                    self.accepted[order["id"]] = order
                    if self.rng.random() < self.cancel_fraction:
                        delay = self.rng.uniform(*self.cancel_delay_s)
                        heapq.heappush(self._cancel_queue, (time.monotonic() + delay, order["id"]))
                elif status == 503:
                    self.refused += 1
                elif status == -1:
                    self.errors.append(f"POST /orders raised {type(response).__name__}: {response}")
                else:
                    self.errors.append(f"POST /orders answered {status}: {response.get_data(True)}")
            if status == 503:
                time.sleep(self.backoff_s)  # a client told to come back later does not hammer
        with self._lock:
            self._posting_left -= 1
            if self._posting_left == 0:
                self.posting_done_at = time.monotonic()

    def _cancel_loop(self) -> None:
        client = self.stack.client()
        while True:
            with self._lock:
                done = self._posting_left == 0 and not self._cancel_queue
                head = self._cancel_queue[0] if self._cancel_queue else None
                if head is not None and head[0] <= time.monotonic():
                    heapq.heappop(self._cancel_queue)
                else:
                    head = None
            if done:
                return
            if head is None:
                time.sleep(0.05)
                continue
            self.cancels[head[1]] = self._cancel(client, head[1])

    def _cancel(self, client: Any, order_id: int) -> int:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = client.post(f"/orders/{order_id}/cancel", json={"reason": "chaos: customer changed mind"})
                status = response.status_code
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"POST /orders/{order_id}/cancel raised {type(exc).__name__}: {exc}")
                return -1
            if status != 503 or time.monotonic() > deadline:
                if status not in (202, 409):
                    self.errors.append(f"cancel of order {order_id} answered {status}: {response.get_data(True)}")
                return status
            time.sleep(0.5)


# --- drain and invariants ------------------------------------------------------------------------------------------
def wait_drain(stack: ChaosStack, timeout: float = DRAIN_TIMEOUT_S) -> float:
    """Wait until every saga is terminal or parked; return when that happened (time.monotonic())."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        try:
            last = stack.open_sagas()
        except sa.exc.OperationalError:
            last = -1
        if last == 0:
            return time.monotonic()
        time.sleep(0.25)
    raise AssertionError(f"[{stack.name}] {last} saga(s) still open after {timeout}s\n{describe_open(stack)}\n"
                         f"{stack.log_tails()}")


def describe_open(stack: ChaosStack, limit: int = 10) -> str:
    with stack.engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT s.id, s.kind, s.order_id, s.status, s.cancel_requested, s.recoveries, s.reason FROM sagas s "
            "WHERE s.status NOT IN ('COMPLETED', 'COMPENSATED', 'FAILED') ORDER BY s.id LIMIT :n"), {"n": limit}).all()
        out = []
        for row in rows:
            out.append(f"saga {tuple(row)}")
            for step in conn.execute(sa.text(
                "SELECT name, status, attempts, max_attempts, error, started_at, finished_at, lease_until, "
                "available_at, dispatched_at FROM saga_steps WHERE saga_id = :id ORDER BY position"), {"id": row.id}):
                out.append(f"    {tuple(step)}")
    return "\n".join(out)


def describe_orders(stack: ChaosStack, order_ids: list[int], limit: int = 4) -> str:
    """The order, its sagas and their steps, and its ledger entries: what a bug report needs."""
    out = []
    payment, delivery = stack.sandbox.ledger("payment"), stack.sandbox.ledger("delivery")
    with stack.engine.connect() as conn:
        for order_id in order_ids[:limit]:
            order = conn.execute(sa.text("SELECT id, status, reason FROM orders WHERE id = :id"),
                                 {"id": order_id}).first()
            out.append(f"order {tuple(order) if order else order_id}")
            for saga in conn.execute(sa.text(
                "SELECT id, kind, status, cancel_requested, recoveries, reason, created_at, finished_at FROM sagas "
                "WHERE order_id = :id ORDER BY id"), {"id": order_id}):
                out.append(f"  saga {tuple(saga)}")
                for step in conn.execute(sa.text(
                    "SELECT name, status, attempts, max_attempts, error, provider_ref, started_at, finished_at "
                    "FROM saga_steps WHERE saga_id = :id ORDER BY position"), {"id": saga.id}):
                    out.append(f"    step {tuple(step)}")
            for provider, ledger in (("payment", payment), ("delivery", delivery)):
                entries = [e for e in ledger if e["order_id"] == order_id]
                out.append(f"  {provider} ledger: {entries}")
    return "\n".join(out)


@dataclass(frozen=True)
class Summary:
    sagas: int
    terminal: int
    parked: int
    orders: Counter[str]


def check_invariants(stack: ChaosStack, workload: Workload) -> Summary:
    """Everything a chaos run must leave true, read from the database and the sandbox ledgers."""
    problems: list[str] = list(workload.errors)
    with stack.engine.connect() as conn:
        orders = {r.id: r for r in conn.execute(sa.text("SELECT id, status, reason FROM orders"))}
        sagas = conn.execute(sa.text(
            "SELECT id, kind, order_id, status, reason, cancel_requested, recoveries, finished_at FROM sagas")).all()
        steps = conn.execute(sa.text(
            "SELECT saga_id, name, status, attempts, max_attempts, started_at FROM saga_steps")).all()
    payment = stack.sandbox.ledger("payment")
    delivery = stack.sandbox.ledger("delivery")

    by_order: dict[int, list[Any]] = defaultdict(list)
    for saga in sagas:
        by_order[saga.order_id].append(saga)

    # Every accepted order has its order saga.
    for order_id in workload.accepted:
        if order_id not in orders:
            problems.append(f"accepted order {order_id} is not in the database")
        elif not any(s.kind == "order" for s in by_order[order_id]):
            problems.append(f"accepted order {order_id} has no order saga")

    # Every saga ended, or is parked for support with a reason.
    for saga in sagas:
        if saga.status == PARKED:
            if not (saga.reason or "").strip():
                problems.append(f"saga {saga.id} is parked FAILED without a reason")
        elif saga.status not in TERMINAL:
            problems.append(f"saga {saga.id} ({saga.kind}, order {saga.order_id}) is still {saga.status}")

    # Money and goods: at most one charge, refunds exactly where the order was undone.
    charges, refunds, ships, cancels = (defaultdict(list) for _ in range(4))
    kinds = {("payment", "charge"): charges, ("payment", "refund"): refunds, ("delivery", "ship"): ships,
             ("delivery", "cancel"): cancels}
    for provider, ledger in (("payment", payment), ("delivery", delivery)):
        for entry in ledger:
            if (provider, entry["kind"]) in kinds:
                kinds[provider, entry["kind"]][entry["order_id"]].append(entry)
    for order_id, order in orders.items():
        status, parked = order.status, any(s.status == PARKED for s in by_order[order_id])
        charged = charges.get(order_id, [])
        refunded = Counter(r["charge_id"] for r in refunds.get(order_id, []))
        shipped = ships.get(order_id, [])
        unshipped = Counter(c["shipment_id"] for c in cancels.get(order_id, []))
        if len(charged) > 1:
            problems.append(f"order {order_id} ({status}) was charged {len(charged)} times: {charged}")
        if len(shipped) > 1:
            problems.append(f"order {order_id} ({status}) was shipped {len(shipped)} times: {shipped}")
        if any(n > 1 for n in refunded.values()):
            problems.append(f"order {order_id} ({status}) has a charge refunded more than once: {refunded}")
        if set(refunded) - {c["id"] for c in charged}:
            problems.append(f"order {order_id} ({status}) has refunds of unknown charges: {refunded}")
        if status in ("PAID", "SHIPPED"):
            if len(charged) != 1:
                problems.append(f"order {order_id} is {status} with {len(charged)} charges")
            if refunded and not parked:
                problems.append(f"order {order_id} is {status} but was refunded: {refunded}")
        if status == "SHIPPED" and len(shipped) != 1:
            problems.append(f"order {order_id} is SHIPPED with {len(shipped)} shipments")
        if status in ("CANCELLED", "REJECTED"):
            unrefunded = [c["id"] for c in charged if refunded[c["id"]] != 1]
            if unrefunded:
                problems.append(f"order {order_id} is {status} but charge(s) {unrefunded} were not refunded once "
                                f"(refunds: {dict(refunded)})")
            active = [s["id"] for s in shipped if unshipped[s["id"]] != 1]
            if active:
                problems.append(f"order {order_id} is {status} but shipment(s) {active} were not cancelled once")

    # Every ended saga left its order in the matching status.
    for order_id, order in orders.items():
        own = {s.kind: s for s in by_order[order_id]}
        order_saga, cancel_saga = own.get("order"), own.get("cancel")
        if cancel_saga is not None and cancel_saga.status == "COMPLETED" and order.status != "CANCELLED":
            problems.append(f"order {order_id} is {order.status} after its cancel saga {cancel_saga.id} completed")
        if order_saga is None:
            continue
        if order_saga.status == "COMPENSATED" and order.status not in ("REJECTED", "CANCELLED"):
            problems.append(f"order {order_id} is {order.status} after its saga {order_saga.id} was compensated")
        if order_saga.status == "COMPLETED" and cancel_saga is None and order.status != "SHIPPED":
            problems.append(f"order {order_id} is {order.status} after its saga {order_saga.id} completed")

    # No step ran after its saga ended; no step ran more often than allowed.
    finished = {s.id: s.finished_at for s in sagas if s.status in (*TERMINAL, PARKED)}
    for step in steps:
        end = finished.get(step.saga_id)
        if end is not None and step.started_at is not None and step.started_at > end:
            problems.append(f"saga {step.saga_id} step {step.name} started at {step.started_at}, after the saga "
                            f"ended at {end}")
        if step.attempts > step.max_attempts:
            problems.append(f"saga {step.saga_id} step {step.name} made {step.attempts} attempts "
                            f"(max {step.max_attempts})")

    if problems:
        shown = "\n".join(problems[:40])
        more = f"\n... and {len(problems) - 40} more" if len(problems) > 40 else ""
        culprits = sorted({int(m.group(1)) for p in problems for m in [re.search(r"order (\d+)", p)] if m})
        raise AssertionError(f"[{stack.name}] {len(problems)} invariant violation(s):\n{shown}{more}\n"
                             f"{describe_orders(stack, culprits)}")
    statuses = Counter(s.status for s in sagas)
    return Summary(len(sagas), statuses["COMPLETED"] + statuses["COMPENSATED"], statuses[PARKED],
                   Counter(o.status for o in orders.values()))


def report(stack: ChaosStack, workload: Workload, summary: Summary, drain_s: float) -> str:
    """The one line a scenario prints."""
    line = (f"CHAOS {stack.name:<22} sagas={summary.sagas} terminal={summary.terminal} parked={summary.parked} "
            f"duplicates_prevented={stack.not_claimed()} drain_s={drain_s:.1f} | posted={workload.posted} "
            f"accepted={len(workload.accepted)} refused_503={workload.refused} cancels={len(workload.cancels)} "
            f"orders={dict(sorted(summary.orders.items()))}")
    print(line, flush=True)
    return line


def run_scenario(stack: ChaosStack, workload: Workload, fault: Callable[[], None]) -> str:
    """Start the workload, run the fault (it returns once the fault is over), then drain, check and report."""
    workload.start()
    try:
        fault()
        fault_over = time.monotonic()
    finally:
        workload.join()
    drained_at = wait_drain(stack)
    summary = check_invariants(stack, workload)
    return report(stack, workload, summary, drained_at - fault_over)
