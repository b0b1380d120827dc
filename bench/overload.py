"""Overload: C concurrent clients post orders for D seconds while the sandbox payment takes 400-620 ms a call.

Reproduces, smaller, the measurement of the system Book Market replaces (100 clients, 120 s, slow payment:
answers took 5-18 s and a quarter failed). Prints requests answered, the share of 202/503/other, latency
percentiles, orders accepted, and after the run drains: accepted orders that reached a terminal state and
whether the payment ledger balances (one charge per paid order, none for the others).

    .venv/bin/python bench/overload.py --clients 100 --seconds 60
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.main import WORKER_THREADS, gunicorn_api  # noqa: E402
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
)

TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=100, help="concurrent clients (100)")
    p.add_argument("--seconds", type=float, default=60, help="how long clients post (60)")
    p.add_argument("--latency-ms", default="400,620", help="sandbox payment latency range (400,620)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (2, as `bookmarket up`)")
    p.add_argument("--threads", type=int, default=WORKER_THREADS, help=f"threads per worker process ({WORKER_THREADS}, "
                   "as `bookmarket worker`)")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting for the API and the workers (repeatable); none: the product's defaults")
    p.add_argument("--drain-timeout", type=float, default=300, help="seconds to wait for sagas to end (300)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "overload.json"))
    return p.parse_args()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Clients:
    """C threads posting orders as fast as answers come back, each on its own keep-alive session."""

    def __init__(self, url: str, clients: int, seconds: float) -> None:
        self.url, self.clients, self.seconds = url, clients, seconds
        self.results: list[tuple[int, float]] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        self.started_at = time.time()
        deadline = time.monotonic() + self.seconds
        threads = [threading.Thread(target=self._client, args=(i, deadline), daemon=True) for i in range(self.clients)]
        for t in threads:
            t.start()
        started = time.monotonic()
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            with self.lock:
                counts = Counter(code for code, _ in self.results)
            print(f"  t={time.monotonic() - started:5.1f}s answered={sum(counts.values())} "
                  f"202={counts[202]} 503={counts[503]} other={sum(counts.values()) - counts[202] - counts[503]}",
                  flush=True)
        self.ended_at = time.time()

    def _client(self, index: int, deadline: float) -> None:
        session = requests.Session()
        session.headers.update(bearer())
        body = {"customer_id": 1000 + index, "book_id": 1 + index % 6, "qty": 1}
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                code = session.post(f"{self.url}/orders", json=body, timeout=60).status_code
            except requests.RequestException:
                code = -1
            with self.lock:
                self.results.append((code, time.monotonic() - started))


def drain(engine: sa.Engine, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with engine.connect() as conn:
            left = conn.execute(sa.text("SELECT count(*) FROM sagas WHERE status NOT IN "
                                        "('COMPLETED','COMPENSATED','FAILED')")).scalar_one()
        print(f"  draining: {left} saga(s) still running", flush=True)
        if left == 0:
            return time.monotonic() - started
        time.sleep(2)
    return float("nan")


def ledger_balances(engine: sa.Engine, sandbox: Sandbox) -> dict[str, Any]:
    charges = Counter(e["order_id"] for e in sandbox.ledger("payment", kind="charge"))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, status FROM orders")).all()
    paid = {r.id for r in rows if r.status in ("PAID", "SHIPPED")}
    unpaid = {r.id for r in rows if r.id not in paid}
    return {
        "paid_orders": len(paid),
        "charges": sum(charges.values()),
        "paid_with_exactly_one_charge": sum(1 for o in paid if charges[o] == 1),
        "unpaid_with_a_charge": sum(1 for o in unpaid if charges[o]),
        "orders_charged_twice": sum(1 for c in charges.values() if c > 1),
        "balanced": all(charges[o] == 1 for o in paid) and not any(charges[o] for o in unpaid),
    }


def main() -> int:
    args = parse()
    command = "python bench/overload.py " + shlex.join(sys.argv[1:])
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bm-overload-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    database_url, drop = create_pg_database(PG_ADMIN_URL)
    upgrade(database_url)
    procs: list[ProcessHandle] = []
    queue = f"saga-overload-{uuid.uuid4().hex[:6]}"
    try:
        sandbox_proc = start_sandbox(free_port(), tmp)
        procs.append(sandbox_proc)
        sandbox = Sandbox(sandbox_proc.url)
        low, high = (int(v) for v in args.latency_ms.split(","))
        sandbox.behave("payment", latency_ms=[low, high])
        env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=REDIS_BASE_URL,
                   SAGA_QUEUE=queue, SANDBOX_URL=sandbox_proc.url, BOOKMARKET_TOKENS=TOKENS_SETTING,
                   **dict(s.split("=", 1) for s in args.setting))
        env.pop("PAYMENT_URL", None), env.pop("DELIVERY_URL", None), env.pop("MESSAGING_URL", None)
        for i in range(args.workers):
            procs.append(start_worker(env, tmp / f"worker{i + 1}.log", args.threads, name=f"w{i + 1}"))
        port = free_port()
        api = spawn(gunicorn_api("127.0.0.1", port), env, tmp / "api.log")
        procs.append(ProcessHandle(api, log=tmp / "api.log"))
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", api)
        print(f"overload: {args.clients} clients for {args.seconds:g}s, payment {low}-{high} ms, {args.workers} "
              f"worker process(es) x {args.threads} threads, API as `bookmarket api`", flush=True)
        clients = Clients(url, args.clients, args.seconds)
        clients.run()
        engine = make_engine(database_url)
        drain_s = drain(engine, args.drain_timeout)
        report = summarize(clients, args, engine, sandbox, drain_s, command)
        engine.dispose()
    finally:
        for proc in reversed(procs):
            proc.stop()
        drop()
        forget_queue(REDIS_BASE_URL, queue)
    print_report(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nwritten: {args.out}\ncommand: {command}")
    return 0 if report["all_accepted_terminal"] and report["ledger"]["balanced"] else 1


def summarize(clients: Clients, args: argparse.Namespace, engine: sa.Engine, sandbox: Sandbox,
              drain_s: float, command: str) -> dict[str, Any]:
    results = clients.results
    counts = Counter(code for code, _ in results)
    latencies = [lat * 1000 for _, lat in results]

    def lat_of(code: int) -> list[float]:
        return [lat * 1000 for c, lat in results if c == code]

    with engine.connect() as conn:
        accepted = conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one()
        terminal = conn.execute(sa.text("SELECT count(*) FROM orders o JOIN sagas s ON s.order_id = o.id "
                                        "WHERE s.kind = 'order' AND s.status IN "
                                        "('COMPLETED','COMPENSATED','FAILED')")).scalar_one()
        statuses = dict(conn.execute(sa.text("SELECT status, count(*) FROM orders GROUP BY status")).all())
        # sagas that ended while the clients were still posting: the rate the stack finished orders under load
        ended_in_run = conn.execute(sa.text(
            "SELECT count(*) FROM sagas WHERE kind = 'order' AND finished_at BETWEEN to_timestamp(:a) AND "
            "to_timestamp(:b)"), {"a": clients.started_at, "b": clients.ended_at}).scalar_one()
    answered = len(results)
    return {
        "command": command, "clients": args.clients, "seconds": args.seconds, "payment_latency_ms": args.latency_ms,
        "answered": answered, "requests_per_s": round(answered / args.seconds, 1),
        "share_202": round(counts[202] / answered, 4) if answered else 0,
        "share_503": round(counts[503] / answered, 4) if answered else 0,
        "share_other": round((answered - counts[202] - counts[503]) / answered, 4) if answered else 0,
        "other_codes": {str(k): v for k, v in counts.items() if k not in (202, 503)},
        "latency_ms": {"p50": round(percentile(latencies, 50), 1), "p95": round(percentile(latencies, 95), 1),
                       "p99": round(percentile(latencies, 99), 1), "max": round(max(latencies, default=0), 1),
                       "mean": round(statistics.fmean(latencies), 1) if latencies else 0},
        "latency_ms_by_code": {str(code): {"p50": round(percentile(lat_of(code), 50), 1),
                                           "p99": round(percentile(lat_of(code), 99), 1)} for code in (202, 503)},
        "orders_accepted": accepted, "accepted_per_s": round(accepted / args.seconds, 1),
        "finished_per_s_during_run": round(ended_in_run / args.seconds, 1),
        "accepted_terminal": terminal, "all_accepted_terminal": terminal == accepted,
        "order_statuses": statuses, "drain_s": round(drain_s, 1), "ledger": ledger_balances(engine, sandbox),
    }


def print_report(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    print("\n| metric | value |\n|---|---|")
    for name, value in [
        ("requests answered", f"{r['answered']} ({r['requests_per_s']}/s)"),
        ("202 / 503 / other", f"{r['share_202']:.1%} / {r['share_503']:.1%} / {r['share_other']:.1%}"),
        ("latency p50 / p95 / p99 / max", f"{lat['p50']} / {lat['p95']} / {lat['p99']} / {lat['max']} ms"),
        ("latency p50 / p99 of 202 and of 503", " and ".join(
            f"{v['p50']} / {v['p99']} ms" for v in r["latency_ms_by_code"].values())),
        ("orders accepted", f"{r['orders_accepted']} ({r['accepted_per_s']}/s)"),
        ("sagas finished while clients posted", f"{r['finished_per_s_during_run']}/s"),
        ("accepted orders terminal after drain", f"{r['accepted_terminal']} (drain {r['drain_s']} s)"),
        ("order statuses", r["order_statuses"]),
        ("payment ledger balances", f"{r['ledger']['balanced']} ({r['ledger']['charges']} charges, "
                                    f"{r['ledger']['paid_orders']} paid orders, "
                                    f"{r['ledger']['orders_charged_twice']} charged twice)"),
    ]:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    sys.exit(main())
