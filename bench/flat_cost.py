"""Flat cost: what the API, the scrape and the sweeper cost with an empty history and with a full one.

One run, its own PostgreSQL database and Redis queue, the API under gunicorn as `bookmarket api` runs it (no Celery
worker: the orders placed stay in flight, the sweeper's and the scrape's working set). First with an empty history
(a few hundred orders in flight), then `bookmarket history fill --orders N` (its time and rows/s printed), then the
same measurements again. For each operation: median and p95 latency over --repeat requests (one client, one at a
time), and for the sweeper one pass (`services.sweeper.sweep`) and each statement it, the scrape and the search run
(the real repository functions, timed in this process). The table gives empty, full, full/empty and whether that is
at most 1.5; the JSON goes to bench/results/flat_cost.json.

    .venv/bin/python bench/flat_cost.py                    # 1,000,000 orders (about 5-8 minutes here)
    .venv/bin/python bench/flat_cost.py --orders 50000     # a quick check
"""
from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.common as c  # noqa: E402

TARGET = 1.5
SEARCHES = ("/admin/sagas?status=FAILED", "/admin/sagas?failing_step=cancel_payment")
IN_FLIGHT = 300  # orders placed before the first measurement: sagas in flight, as on a live system


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="flat_cost.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=1_000_000, help="finished orders the history fill adds (1000000)")
    p.add_argument("--repeat", type=int, default=200, help="requests per operation and phase (200)")
    p.add_argument("--statement-repeat", type=int, default=50, help="runs of each statement and sweeper pass (50)")
    p.add_argument("--api-workers", type=int, default=2)
    p.add_argument("--redis", default=c.REDIS_URL)
    p.add_argument("--name", default="flat_cost", help="bench/results/<name>.json")
    p.add_argument("--keep-logs", action="store_true")
    return p.parse_args(argv)


def timed_ms(call: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        c.check_stop()
        began = time.perf_counter()
        call()
        out.append((time.perf_counter() - began) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(ms), "p95_ms": c.percentile(ms, 95), "n": len(ms)}


class Phase:
    """The measurements of one phase against the running API and the database."""

    def __init__(self, url: str, rt: Any, args: argparse.Namespace, customers: int, order_ids: tuple[int, int]):
        self.url, self.rt, self.args = url, rt, args
        self.session = c.api_session()
        self.customers = customers
        self.order_ids = order_ids
        self.rng = random.Random(7)

    def get(self, path: str) -> None:
        response = self.session.get(self.url + path, timeout=30)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])

    def post_order(self) -> None:
        body = {"customer_id": self.rng.randint(1, self.customers), "book_id": self.rng.randint(1, 6), "qty": 1}
        response = self.session.post(self.url + "/orders", json=body, timeout=30)
        assert response.status_code == 202, (response.status_code, response.text[:300])

    def operations(self) -> dict[str, Callable[[], None]]:
        low, high = self.order_ids
        return {
            "POST /orders": self.post_order,
            "GET /orders/<id>": lambda: self.get(f"/orders/{self.rng.randint(low, high)}"),
            "GET /customers/<id>/orders": lambda: self.get(f"/customers/{self.rng.randint(1, self.customers)}/orders"),
            **{f"GET {path}": (lambda path=path: self.get(path)) for path in SEARCHES},
            "GET /metrics": lambda: self.get("/metrics"),
        }

    def statements(self) -> dict[str, Callable[[], Any]]:
        from infra import repository as repo
        from services import saga_search, sweeper
        from services.saga_search import SagaFilter

        rt = self.rt

        def read(call: Callable[[Any], Any]) -> Callable[[], Any]:
            def run() -> Any:
                with rt.db.reading() as conn:
                    return call(conn)
            return run

        now = rt.clock()
        return {
            "sweeper pass": lambda: sweeper.sweep(rt),
            "stmt expired_leases": read(lambda conn: repo.expired_leases(conn, now, sweeper.BATCH)),
            "stmt due_dispatches": read(lambda conn: repo.due_dispatches(
                conn, now, now - timedelta(seconds=rt.settings.redispatch_after_s), sweeper.BATCH)),
            "stmt forget_idempotency_keys": read(lambda conn: repo.forget_idempotency_keys(
                conn, now - timedelta(seconds=max(rt.settings.idempotency_key_ttl_s, 1)), sweeper.BATCH)),
            "stmt count_sagas_by_status": read(lambda conn: repo.count_sagas_by_status(
                conn, ("RUNNING", "COMPENSATING", "FAILED"))),
            "stmt count_waiting_sagas": read(lambda conn: repo.count_waiting_sagas(conn, 100_000)),
            "stmt count_stuck_steps": read(lambda conn: repo.count_stuck_steps(conn, now, now, 100_000)),
            "stmt search status=FAILED": lambda: saga_search.search(rt, SagaFilter(statuses=("FAILED",)), 0, 20),
            "stmt search failing_step": lambda: saga_search.search(rt, SagaFilter(failing_step="cancel_payment"),
                                                                  0, 20),
        }

    def measure(self, label: str) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for name, call in self.operations().items():
            for _ in range(5):  # warm the connection and the caches
                call()
            out[name] = summary(timed_ms(call, self.args.repeat))
            c.log(f"{label}: {name}: p50 {out[name]['p50_ms']:.2f} ms, p95 {out[name]['p95_ms']:.2f} ms")
        for name, call in self.statements().items():
            call()
            out[name] = summary(timed_ms(call, self.args.statement_repeat))
            c.log(f"{label}: {name}: p50 {out[name]['p50_ms']:.2f} ms, p95 {out[name]['p95_ms']:.2f} ms")
        return out


def fill(url_db: str, orders: int) -> dict[str, Any]:
    """`bookmarket history fill` as a user runs it; its output printed, its time and rows/s returned."""
    argv = [sys.executable, "-m", "cli.main", "history", "fill", "--orders", str(orders), "--database-url", url_db]
    c.log(f"history fill: {' '.join(argv[1:4])} ... --orders {orders}")
    began = time.monotonic()
    lines = []
    with subprocess.Popen(argv, env=c.base_env(), cwd=c.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # its progress as it comes
            print(f"    {line.rstrip()}", flush=True)
            lines.append(line)
    seconds = time.monotonic() - began
    if proc.returncode:
        raise RuntimeError(f"history fill failed ({proc.returncode}): {''.join(lines[-20:])}")
    summary_line = next(line.strip() for line in lines if line.startswith("filled "))
    rows = int(summary_line.split(", ")[1].split(" rows")[0].replace(",", ""))
    return {"orders": orders, "seconds": seconds, "rows": rows, "rows_per_s": rows / seconds,
            "summary": summary_line}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body(stack: contextlib.ExitStack) -> int:
        import redis

        from infra.config import Settings
        from infra.migrate import upgrade
        from services.runtime import build_runtime

        env_info = c.environment()
        c.log(f"flat cost: empty history, then {args.orders:,} finished orders (load average "
              f"{env_info['load_avg_at_start']})")
        logs = c.log_dir(stack, "flat", args.keep_logs)
        url_db = c.create_database(stack, "bm_bench_flat")
        upgrade(url_db)
        queue = f"bench-flat-{c.run_id()}"
        stack.callback(lambda: redis.Redis.from_url(args.redis).delete(queue))
        env = c.base_env(DATABASE_URL=c.sa_url(url_db), REDIS_URL=args.redis, SAGA_QUEUE=queue,
                         BOOKMARKET_TOKENS=f"support:bench={c.TOKEN}", IDEMPOTENCY_KEY_TTL_S="86400",
                         ADMISSION_MAX_WAITING_PAYMENTS="1000000", ADMISSION_TARGET_MS="0",
                         REDISPATCH_AFTER_S="3600")
        _, url = c.start_api(stack, env, logs, args.api_workers)
        rt = build_runtime(Settings.from_env(env))
        stack.callback(rt.close)
        customers = max(1, args.orders // 10)
        seed = Phase(url, rt, args, customers, (1, 1))
        for _ in range(IN_FLIGHT):
            seed.post_order()
        c.log(f"{IN_FLIGHT} orders in flight; measuring with an empty history")
        empty = Phase(url, rt, args, customers, (1, IN_FLIGHT)).measure("empty")
        filled = fill(c.sa_url(url_db), args.orders)
        c.log(f"history filled: {filled['summary']}")
        high = IN_FLIGHT + args.repeat + 5 + args.orders
        full = Phase(url, rt, args, customers, (1, high)).measure("full")
        report(args, empty, full, filled, env_info)
        return 0

    return c.run_main(body)


def report(args: argparse.Namespace, empty: dict[str, Any], full: dict[str, Any], filled: dict[str, Any],
           env_info: dict[str, Any]) -> None:
    rows, results = [], []
    for name, before in empty.items():
        after = full[name]
        ratio = after["p50_ms"] / before["p50_ms"] if before["p50_ms"] else float("nan")
        ok = ratio <= TARGET
        rows.append([name, before["p50_ms"], after["p50_ms"], ratio, before["p95_ms"], after["p95_ms"],
                     "yes" if ok else "NO"])
        results.append({"operation": name, "empty": before, "full": after, "ratio_p50": ratio, "within": ok})
    c.print_table(f"Flat cost: empty history vs {args.orders:,} finished orders (median ms over {args.repeat} "
                  f"requests, {args.statement_repeat} statement runs)",
                  ["operation", "empty p50", "full p50", "full/empty", "empty p95", "full p95", f"<= {TARGET}"],
                  rows, digits=2)
    print(f"history fill: {filled['summary']} (wall {filled['seconds']:.1f}s, {filled['rows_per_s']:,.0f} rows/s)")
    command = c.command_line()
    path = c.write_json(args.name, {"benchmark": "flat_cost", "command": command, "params": vars(args),
                                    "environment": env_info, "fill": filled, "results": results,
                                    "notes": ["one client, requests one at a time; no Celery worker: the orders "
                                              f"placed ({IN_FLIGHT} before, --repeat per phase) stay in flight",
                                              "statements: the real repository/search functions timed in the "
                                              "benchmark's own process"]})
    print(f"command: {command}\nresults: {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
