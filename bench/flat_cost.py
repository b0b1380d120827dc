"""Flat cost: what the API, the scrape and the sweeper cost with no history and with a full one.

Two databases and two APIs under gunicorn (as `bookmarket api` runs it), each with its own Redis queue and no Celery
worker (the orders placed stay in flight: the sweeper's and the scrape's working set). Both hold the same live state:
300 orders in flight and 0.2 % of --orders parked FAILED sagas waiting for support (`bookmarket history fill
--failed-share 1`); the "full" one then gets --orders finished orders (`bookmarket history fill --orders N
--failed-share 0`, its progress, time and rows/s printed), and a CHECKPOINT. Then each operation is measured on both
sides in turn, in 4 interleaved rounds (the two sides share the machine's ups and downs): median and p95 latency over
--repeat requests (one client, one at a time), one sweeper pass (`services.sweeper.sweep`) and each statement the
sweeper, the scrape and the search run (the real repository functions, timed in this process). The table gives
empty, full, full/empty and whether that is at most 1.5; the JSON goes to bench/results/flat_cost.json.

    .venv/bin/python bench/flat_cost.py                    # 1,000,000 orders (about 5 minutes here)
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
IN_FLIGHT = 300  # orders placed before measuring: sagas in flight, as on a live system
# Parked sagas (FAILED, waiting for support) on both sides: work in hand, not history; the history adds none
PARKED_SHARE = 0.002
ROUNDS = 4
# The orders in flight belong to these customers (10 each), whose pages GET /customers/<id>/orders reads on both
# sides: a full page (10) either way, the full side's customers having as many finished orders besides.
REGULARS = 30


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
    """One side of the comparison: its API, its database (through a Runtime in this process) and its ids."""

    def __init__(self, label: str, url: str, rt: Any, args: argparse.Namespace, customers: int) -> None:
        self.label, self.url, self.rt, self.args = label, url, rt, args
        self.session = c.api_session()
        self.customers = customers
        self.top_order = 1
        self.rng = random.Random(7)

    def get(self, path: str) -> None:
        response = self.session.get(self.url + path, timeout=30)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])

    def post_order(self, customer_id: int | None = None) -> None:
        body = {"customer_id": customer_id or self.rng.randint(1, self.customers), "book_id": self.rng.randint(1, 6),
                "qty": 1}
        response = self.session.post(self.url + "/orders", json=body, timeout=30)
        assert response.status_code == 202, (response.status_code, response.text[:300])

    def operations(self) -> dict[str, Callable[[], None]]:
        return {
            "POST /orders": self.post_order,
            "GET /orders/<id>": lambda: self.get(f"/orders/{self.rng.randint(1, self.top_order)}"),
            "GET /customers/<id>/orders": lambda: self.get(f"/customers/{self.rng.randint(1, REGULARS)}/orders"),
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


def measure(phases: list[Phase], args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Every operation on each phase in turn, in ROUNDS rounds: the two sides share the machine's ups and downs."""
    out: dict[str, dict[str, list[float]]] = {p.label: {} for p in phases}
    for phase in phases:
        with phase.rt.db.reading() as conn:
            phase.top_order = int(conn.exec_driver_sql("SELECT max(id) FROM orders").scalar_one())
        for call in [*phase.operations().values(), *phase.statements().values()]:
            for _ in range(3):  # warm the connections and the caches
                call()
    for n in range(ROUNDS):
        for name in [*phases[0].operations(), *phases[0].statements()]:
            repeat = args.repeat if name.startswith(("GET", "POST")) else args.statement_repeat
            for phase in phases:
                call = {**phase.operations(), **phase.statements()}[name]
                out[phase.label].setdefault(name, []).extend(timed_ms(call, max(1, repeat // ROUNDS)))
        c.log(f"round {n + 1}/{ROUNDS} measured")
    return out


def fill(url_db: str, orders: int, *options: str, quiet: bool = False) -> dict[str, Any]:
    """`bookmarket history fill` as a user runs it; its output printed, its time and rows/s returned."""
    argv = [sys.executable, "-m", "cli.main", "history", "fill", "--orders", str(orders), "--database-url", url_db,
            *options]
    c.log(f"bookmarket history fill --orders {orders} {' '.join(options)}")
    began = time.monotonic()
    lines = []
    with subprocess.Popen(argv, env=c.base_env(), cwd=c.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # its progress as it comes
            if not quiet:
                print(f"    {line.rstrip()}", flush=True)
            lines.append(line)
    seconds = time.monotonic() - began
    if proc.returncode:
        raise RuntimeError(f"history fill failed ({proc.returncode}): {''.join(lines[-20:])}")
    summary_line = next(line.strip() for line in lines if line.startswith("filled "))
    rows = int(summary_line.split(", ")[1].split(" rows")[0].replace(",", ""))
    return {"orders": orders, "seconds": seconds, "rows": rows, "rows_per_s": rows / seconds,
            "summary": summary_line}


def checkpoint(url_db: str) -> None:
    """Write the fill's dirty pages out now, not while the measurements run."""
    import sqlalchemy as sa

    eng = sa.create_engine(c.sa_url(url_db), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with eng.connect() as conn:
        conn.exec_driver_sql("CHECKPOINT")
    eng.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body(stack: contextlib.ExitStack) -> int:
        import redis

        from infra.config import Settings
        from infra.migrate import upgrade
        from services.runtime import build_runtime

        env_info = c.environment()
        parked = max(20, round(args.orders * PARKED_SHARE))
        c.log(f"flat cost: {IN_FLIGHT} orders in flight and {parked} parked sagas, with no history and with "
              f"{args.orders:,} finished orders (load average {env_info['load_avg_at_start']})")
        logs = c.log_dir(stack, "flat", args.keep_logs)
        customers = max(1, args.orders // 10)
        phases, filled = [], {}
        for label in ("empty", "full"):
            url_db = c.create_database(stack, f"bm_bench_flat_{label}")
            upgrade(url_db)
            fill(c.sa_url(url_db), parked, "--failed-share", "1", "--rejected-share", "0", "--cancelled-share", "0",
                 "--customers", str(customers), quiet=True)
            if label == "full":
                filled = fill(c.sa_url(url_db), args.orders, "--failed-share", "0", "--customers", str(customers))
                c.log(f"history filled: {filled['summary']} (wall {filled['seconds']:.1f}s)")
            checkpoint(url_db)
            queue = f"bench-flat-{label}-{c.run_id()}"
            stack.callback(lambda queue=queue: redis.Redis.from_url(args.redis).delete(queue))
            env = c.base_env(DATABASE_URL=c.sa_url(url_db), REDIS_URL=args.redis, SAGA_QUEUE=queue,
                             BOOKMARKET_TOKENS=f"support:bench={c.TOKEN}", IDEMPOTENCY_KEY_TTL_S="86400",
                             ADMISSION_MAX_WAITING_PAYMENTS="1000000", ADMISSION_TARGET_MS="0",
                             REDISPATCH_AFTER_S="3600")
            _, url = c.start_api(stack, env, logs, args.api_workers, name=f"api-{label}")
            rt = build_runtime(Settings.from_env(env))
            stack.callback(rt.close)
            phase = Phase(label, url, rt, args, customers)
            for n in range(IN_FLIGHT):
                phase.post_order(1 + n % REGULARS)
            phases.append(phase)
        c.log(f"measuring both, {ROUNDS} interleaved rounds")
        raw = measure(phases, args)
        report(args, {k: summary(v) for k, v in raw["empty"].items()},
               {k: summary(v) for k, v in raw["full"].items()}, filled, env_info, parked)
        return 0

    return c.run_main(body)


def report(args: argparse.Namespace, empty: dict[str, Any], full: dict[str, Any], filled: dict[str, Any],
           env_info: dict[str, Any], parked: int) -> None:
    rows, results = [], []
    for name, before in empty.items():
        after = full[name]
        ratio = after["p50_ms"] / before["p50_ms"] if before["p50_ms"] else float("nan")
        ok = ratio <= TARGET
        rows.append([name, before["p50_ms"], after["p50_ms"], ratio, before["p95_ms"], after["p95_ms"],
                     "yes" if ok else "NO"])
        results.append({"operation": name, "empty": before, "full": after, "ratio_p50": ratio, "within": ok})
    c.print_table(f"Flat cost: no history vs {args.orders:,} finished orders, both with {IN_FLIGHT}+ sagas in "
                  f"flight and {parked} parked (median ms over {args.repeat} requests, {args.statement_repeat} "
                  f"statement runs, {ROUNDS} interleaved rounds)",
                  ["operation", "empty p50", "full p50", "full/empty", "empty p95", "full p95", f"<= {TARGET}"],
                  rows, digits=2)
    print(f"history fill: {filled['summary']} (wall {filled['seconds']:.1f}s, {filled['rows_per_s']:,.0f} rows/s)")
    command = c.command_line()
    path = c.write_json(args.name, {"benchmark": "flat_cost", "command": command, "params": vars(args),
                                    "environment": env_info, "fill": filled, "results": results,
                                    "parked": parked, "in_flight_at_start": IN_FLIGHT,
                                    "notes": ["one client, requests one at a time; no Celery worker: the orders "
                                              f"placed ({IN_FLIGHT} before, --repeat per phase) stay in flight",
                                              "two databases and two APIs (empty, full), measured in interleaved "
                                              "rounds",
                                              "statements: the real repository/search functions timed in the "
                                              "benchmark's own process"]})
    print(f"command: {command}\nresults: {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
