"""Zero-downtime restarts: C clients post orders while the API is reloaded and replaced and the workers restart.

The stack runs on free ports, on the real PostgreSQL (a database of its own) and Redis (a queue of its own), with
the sandbox providers answering in 50-150 ms so steps are in flight at every moment. While the clients post:

  1. reload:   SIGHUP to the API's gunicorn master (new worker processes, the old ones finish their requests)
  2. replace:  SIGUSR2 to it (a new master and new workers on the same listening socket), then SIGTERM to the old
               master once the new one serves (its workers finish their requests and exit): a rolling replacement
               of every API process, as a Deployment rollout does pod by pod
  3. workers:  each Celery worker in turn gets SIGTERM (warm shutdown: it stops taking messages, the running steps
               finish their call), is waited for, and is started again

Then it waits for every saga to end and prints the availability (answers 2xx or a clean 503 with Retry-After, over
all requests; a connection error, a timeout or any other status is a failure), the longest answer, and whether
every accepted order reached a terminal state (none lost) and the payment ledger balances.

    .venv/bin/python bench/zero_downtime.py --clients 20
    .venv/bin/python bench/zero_downtime.py --clients 20 --phases cold    # the comparison: what a plain restart costs
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.main import gunicorn_api  # noqa: E402
from infra.db import make_engine  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from tests.conftest import create_pg_database  # noqa: E402
from tests.integration.conftest import forget_queue  # noqa: E402
from tests.support import (  # noqa: E402
    PG_ADMIN_URL,
    REDIS_BASE_URL,
    TOKENS_SETTING,
    ProcessHandle,
    Sandbox,
    bearer,
    free_port,
    spawn,
    start_sandbox,
    start_worker,
    wait_http,
    wait_until,
)

TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20, help="concurrent clients posting orders (20)")
    p.add_argument("--workers", type=int, default=2, help="Celery worker processes, restarted one by one (2)")
    p.add_argument("--threads", type=int, default=64, help="threads per worker process (64)")
    p.add_argument("--think-ms", type=float, default=100, help="pause of each client between two orders (100)")
    p.add_argument("--settle", type=float, default=5, help="seconds of load before, between and after events (5)")
    p.add_argument("--latency-ms", default="50,150", help="sandbox latency range of every provider (50,150)")
    p.add_argument("--phases", default="reload,replace,workers",
                   help="which events, in order: reload, replace, workers, and for comparison cold (a stop and a "
                        "start of the API, its port closed in between); default reload,replace,workers")
    p.add_argument("--drain-timeout", type=float, default=120, help="seconds to wait for the sagas to end (120)")
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' logs even when nothing failed")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "zero_downtime.json"))
    return p.parse_args(argv)


@dataclass
class Answer:
    at: float
    seconds: float
    code: int  # -1: no HTTP answer (connection refused or reset, timeout)
    error: str = ""
    order_id: int | None = None
    retry_after: bool = False


@dataclass
class Load:
    """C threads posting orders as fast as answers come back, each on its own keep-alive session."""

    url: str
    clients: int
    think_s: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=90)

    def _client(self, index: int) -> None:
        session = requests.Session()
        session.headers.update(bearer())
        body = {"customer_id": 2000 + index, "book_id": 1 + index % 6, "qty": 1}
        while not self.stop.is_set():
            self._record(self._post(session, body))
            self.stop.wait(self.think_s)

    def _post(self, session: requests.Session, body: dict[str, int]) -> Answer:
        started = time.monotonic()
        try:
            response = session.post(f"{self.url}/orders", json=body, timeout=30)
        except requests.RequestException as exc:
            return Answer(started, time.monotonic() - started, -1, type(exc).__name__ + ": " + str(exc)[:160])
        order_id = response.json().get("id") if response.status_code == 202 else None
        return Answer(started, time.monotonic() - started, response.status_code, order_id=order_id,
                      retry_after="Retry-After" in response.headers)

    def _record(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)


class Api:
    """The API as `bookmarket api` runs it (gunicorn, 2 processes x 16 threads), with a pid file to follow USR2."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.port, self.tmp = free_port(), tmp
        self.pidfile = tmp / "api.pid"
        self.env = dict(env, GUNICORN_CMD_ARGS=f"--pid {self.pidfile}")
        self.url = f"http://127.0.0.1:{self.port}"
        self._start()

    def _start(self) -> None:
        log = self.tmp / f"api-{int(time.time() * 1000)}.log"
        self.handle = ProcessHandle(spawn(gunicorn_api("127.0.0.1", self.port), self.env, log), log=log)
        wait_http(f"{self.url}/readyz", self.handle.proc, timeout=60)
        self.pid = self.handle.proc.pid

    def cold_restart(self) -> str:
        """For comparison, what the others avoid: stop the API (SIGTERM, graceful) and start a new one on the
        same port once it has exited; the port is closed in between."""
        started = time.monotonic()
        old = self.pid
        self.handle.stop()
        stopped = time.monotonic() - started
        self._start()
        return (f"cold restart: master {old} stopped in {stopped:.1f}s, new master {self.pid} ready "
                f"{time.monotonic() - started:.1f}s after the SIGTERM")

    def master(self) -> int:
        return self.pid

    def children(self, pid: int) -> set[int]:
        return {c.pid for c in psutil.Process(pid).children()}

    def reload(self) -> str:
        """SIGHUP: the master starts new worker processes and stops the old ones gracefully."""
        master = self.master()
        before = self.children(master)
        os.kill(master, signal.SIGHUP)
        wait_until(lambda: len(self.children(master) - before) >= 2 and not (before & self.children(master)), 60,
                   0.1, "the reloaded API processes to replace the old ones")
        return f"HUP to master {master}: processes {sorted(before)} replaced by {sorted(self.children(master))}"

    def replace(self) -> str:
        """SIGUSR2: a new master (and its processes) on the same socket; then SIGTERM to the old master, whose
        processes finish their requests and exit."""
        old = self.master()
        os.kill(old, signal.SIGUSR2)
        new = wait_until(lambda: self._new_master(old), 60, 0.1, "the new API master")
        wait_until(lambda: len(self.children(new)) >= 2 and self.ready(self.children(new)), 60, 0.1,
                   "the new master's processes to load the app (post_worker_init)")
        os.kill(old, signal.SIGTERM)
        wait_until(lambda: not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE, 60,
                   0.1, "the old API master to exit")
        self.handle.proc.wait(timeout=5)
        group = self.handle.proc.pid
        self.handle = ProcessHandle(_Adopted(new, group), log=self.handle.log)  # type: ignore[arg-type]
        self.pid = new
        return f"USR2 to master {old}: new master {new} with {sorted(self.children(new))}; old master TERM, exited"

    def ready(self, pids: set[int]) -> bool:
        """Every one of these API processes logged that it loaded the app (api/gunicorn_conf.py post_worker_init)."""
        text = self.handle.log.read_text(errors="replace") if self.handle.log else ""
        return all(f"API process {pid} ready" in text for pid in pids)

    def _new_master(self, old: int) -> int | None:
        """The re-executed master writes `<pidfile>.2` until the old one exits (then renames it)."""
        try:
            pid = int(self.pidfile.with_name(self.pidfile.name + ".2").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid != old and psutil.pid_exists(pid) else None


class _Adopted:
    """The master gunicorn re-executed (not our Popen child), in the first master's process group: enough of Popen
    for ProcessHandle.stop() (signal the master, then SIGKILL the group)."""

    def __init__(self, master: int, group: int) -> None:
        self.master, self.pid = master, group
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return None if psutil.pid_exists(self.master) else 0

    def send_signal(self, sig: int) -> None:
        os.kill(self.master, sig)

    def wait(self, timeout: float | None = None) -> int:
        try:
            psutil.Process(self.master).wait(timeout=timeout)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            raise subprocess.TimeoutExpired("gunicorn", timeout or 0) from None
        self.returncode = 0
        return 0


def restart_workers(workers: list[ProcessHandle], env: dict[str, str], tmp: Path, threads: int,
                    settle: Callable[[], None], note: Callable[[str], None]) -> None:
    """Each worker in turn: SIGTERM (warm shutdown), wait for its exit, start it again, wait until it is ready."""
    for index, worker in enumerate(workers):
        started = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        code = worker.proc.wait(timeout=60)
        stopped = time.monotonic() - started
        workers[index] = start_worker(env, tmp / f"worker{index + 1}-{int(time.time())}.log", threads,
                                      name=f"w{index + 1}")
        note(f"worker w{index + 1}: SIGTERM, exited with {code} after {stopped:.1f}s, started again "
             f"(ready {time.monotonic() - started:.1f}s after the SIGTERM)")
        settle()


def drain(engine: sa.Engine, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with engine.connect() as conn:
            left = conn.execute(sa.text("SELECT count(*) FROM sagas WHERE status NOT IN "
                                        "('COMPLETED','COMPENSATED','FAILED')")).scalar_one()
        if left == 0:
            return time.monotonic() - started
        time.sleep(1)
    return float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the stack, run the load through the events, drain, and return the report."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bm-zero-downtime-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    database_url, drop = create_pg_database(PG_ADMIN_URL)
    upgrade(database_url)
    queue = f"saga-zd-{uuid.uuid4().hex[:6]}"
    procs: list[ProcessHandle] = []
    workers: list[ProcessHandle] = []
    api: Api | None = None
    clean = False
    try:
        sandbox_proc = start_sandbox(free_port(), tmp)
        procs.append(sandbox_proc)
        sandbox = Sandbox(sandbox_proc.url)
        low, high = (int(v) for v in args.latency_ms.split(","))
        for provider in ("payment", "delivery", "messaging"):
            sandbox.behave(provider, latency_ms=[low, high])
        env = {k: v for k, v in os.environ.items() if k not in ("PAYMENT_URL", "DELIVERY_URL", "MESSAGING_URL")}
        env.update(DATABASE_URL=database_url, REDIS_URL=REDIS_BASE_URL, SAGA_QUEUE=queue,
                   SANDBOX_URL=sandbox_proc.url, BOOKMARKET_TOKENS=TOKENS_SETTING,
                   LOG_FORMAT=os.environ.get("LOG_FORMAT", "text"))
        workers = [start_worker(env, tmp / f"worker{i + 1}.log", args.threads, name=f"w{i + 1}")
                   for i in range(args.workers)]
        api = Api(env, tmp)
        load = Load(api.url, args.clients, args.think_ms / 1000)
        events: list[tuple[float, str]] = []
        origin = time.monotonic()

        def settle() -> None:
            time.sleep(args.settle)

        def note(line: str) -> None:
            events.append((round(time.monotonic() - origin, 1), line))
            print(f"  t={events[-1][0]:5.1f}s {line}", flush=True)

        load.start()
        settle()
        for phase in args.phases.split(","):
            note(f"{phase}: begins")
            if phase == "reload":
                note(api.reload())
                settle()
            elif phase == "replace":
                note(api.replace())
                settle()
            elif phase == "cold":
                note(api.cold_restart())
                settle()
            elif phase == "workers":
                restart_workers(workers, env, tmp, args.threads, settle, note)
            else:
                raise SystemExit(f"unknown phase {phase!r}")
        load.finish()
        note(f"load stopped: {len(load.answers)} requests")
        engine = make_engine(database_url)
        drain_s = drain(engine, args.drain_timeout)
        report = summarize(load, engine, sandbox, drain_s, events, origin, warm_up_s=args.settle)
        engine.dispose()
        clean = report["failed"] == 0 and report["no_order_lost"]
        report["logs"] = str(tmp) if args.keep_logs or not clean else "removed (nothing failed)"
        return report
    finally:
        for proc in [*workers, *([api.handle] if api else []), *procs]:
            try:  # one process that fails to stop must not leave the others running
                proc.stop()
            except Exception as exc:  # noqa: BLE001
                print(f"  could not stop pid {proc.proc.pid}: {exc!r}", flush=True)
        drop()
        forget_queue(REDIS_BASE_URL, queue)
        if clean and not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)


def longest_by_phase(answers: list[Answer], events: list[tuple[float, str]], origin: float) -> dict[str, float]:
    """The longest answer to a request sent from one phase's beginning to the next one's (or the end)."""
    starts = [(t, line.split(":")[0]) for t, line in events if line.endswith(": begins")]
    bounds = [*(t for t, _ in starts[1:]), float("inf")]
    return {name: round(max((a.seconds for a in answers if begin <= a.at - origin < end), default=0.0), 3)
            for (begin, name), end in zip(starts, bounds, strict=True)}


def summarize(load: Load, engine: sa.Engine, sandbox: Sandbox, drain_s: float, events: list[tuple[float, str]],
              origin: float, warm_up_s: float) -> dict[str, Any]:
    answers = load.answers
    ok = [a for a in answers if 200 <= a.code < 300]
    clean_503 = [a for a in answers if a.code == 503 and a.retry_after]
    failed = [a for a in answers if a not in ok and a not in clean_503]
    accepted = {a.order_id for a in ok if a.order_id is not None}
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT o.id, o.status AS order_status, s.status AS saga_status FROM orders o "
                                    "JOIN sagas s ON s.order_id = o.id AND s.kind = 'order'")).all()
        recovered = conn.execute(sa.text("SELECT count(*) FROM sagas WHERE recoveries > 0")).scalar_one()
        attempts = dict(conn.execute(sa.text("SELECT outcome, count(*) FROM step_attempts GROUP BY outcome")).all())
    sagas = {r.id: r.saga_status for r in rows}
    charges = Counter(e["order_id"] for e in sandbox.ledger("payment", kind="charge"))
    paid = {r.id for r in rows if r.order_status in ("PAID", "SHIPPED")}
    longest = max(answers, key=lambda a: a.seconds)
    after_warm_up = [a for a in answers if a.at - origin >= warm_up_s] or answers
    longest_in_events = max(after_warm_up, key=lambda a: a.seconds)
    return {
        "requests": len(answers),
        "answered_2xx": len(ok),
        "clean_503": len(clean_503),
        "failed": len(failed),
        "availability": round((len(ok) + len(clean_503)) / len(answers), 6) if answers else 0.0,
        "failures": Counter(f"{a.code} {a.error.split(':')[0]}".strip() for a in failed),
        "failure_times_s": [round(a.at - origin, 2) for a in failed][:20],
        "longest_answer_s": round(longest.seconds, 3),
        "longest_answer_at_s": round(longest.at - origin, 1),
        "longest_answer_by_phase_s": longest_by_phase(answers, events, origin),
        "slowest_answers": [(round(a.at - origin, 1), round(a.seconds, 2), a.code)
                            for a in sorted(answers, key=lambda a: -a.seconds)[:8]],
        "longest_answer_after_warm_up_s": round(longest_in_events.seconds, 3),
        "longest_answer_after_warm_up_at_s": round(longest_in_events.at - origin, 1),
        "orders_accepted": len(accepted),
        "orders_in_database": len(sagas),
        "accepted_orders_missing": sorted(accepted - set(sagas)),
        "orders_not_terminal": sum(1 for s in sagas.values() if s not in TERMINAL),
        "order_statuses": dict(Counter(r.order_status for r in rows)),
        "no_order_lost": accepted <= set(sagas) and all(s in TERMINAL for s in sagas.values()),
        "sagas_recovered_by_the_sweeper": recovered,
        "step_attempts_by_outcome": attempts,
        "ledger_balanced": all(charges[o] == 1 for o in paid) and not any(charges[o] for o in set(sagas) - paid),
        "drain_s": round(drain_s, 1),
        "events": events,
    }


def print_report(r: dict[str, Any], command: str) -> None:
    print("\n| metric | value |\n|---|---|")
    for name, value in [
        ("events", "; ".join(f"t={t}s {line}" for t, line in r["events"])),
        ("requests", r["requests"]),
        ("answered 2xx / clean 503 / failed", f"{r['answered_2xx']} / {r['clean_503']} / {r['failed']}"),
        ("availability (2xx or clean 503)", f"{r['availability']:.4%}"),
        ("failures", dict(r["failures"]) or "none"),
        ("longest answer", f"{r['longest_answer_s'] * 1000:.0f} ms (at t={r['longest_answer_at_s']}s)"),
        ("longest answer after the warm-up (the first --settle s)",
         f"{r['longest_answer_after_warm_up_s'] * 1000:.0f} ms (at t={r['longest_answer_after_warm_up_at_s']}s)"),
        ("longest answer by phase", ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in
                                              r["longest_answer_by_phase_s"].items())),
        ("slowest answers (t s, seconds, status)", r["slowest_answers"]),
        ("orders accepted (202)", r["orders_accepted"]),
        ("accepted orders missing / not terminal", f"{len(r['accepted_orders_missing'])} / "
                                                   f"{r['orders_not_terminal']} (drain {r['drain_s']} s)"),
        ("order statuses", r["order_statuses"]),
        ("no order lost", r["no_order_lost"]),
        ("sagas whose step the sweeper took back (lease expired)", r["sagas_recovered_by_the_sweeper"]),
        ("step attempts by outcome", r["step_attempts_by_outcome"]),
        ("payment ledger balances", r["ledger_balanced"]),
    ]:
        print(f"| {name} | {value} |")
    print(f"\ncommand: {command}")


def main() -> int:
    args = parse()
    command = "python bench/zero_downtime.py " + shlex.join(sys.argv[1:])
    print(f"zero downtime: {args.clients} clients, {args.workers} worker process(es) x {args.threads} threads, "
          f"providers {args.latency_ms} ms, events {args.phases}", flush=True)
    report = run(args)
    report["command"] = command
    print_report(report, command)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(f"written: {args.out}; logs: {report['logs']}")
    return 0 if report["failed"] == 0 and report["no_order_lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
