"""API load: POST /orders and GET /orders/<id> at C concurrent connections for D seconds each.

The API runs under gunicorn exactly as `bookmarket up` runs it (2 worker processes x 16 threads unless
--api-workers), on a fresh migrated PostgreSQL database and the real Redis broker. By default NO Celery worker
runs (--workers 0): the API is measured alone, every POST commits its order and saga and publishes the first step
to the broker, and the orders stay PENDING (the run's queue is deleted afterwards). With --workers N, N worker
processes (--concurrency threads each, the sweeper in the first) and the sandbox run the sagas alongside, on the
same 2 cores.

GET /orders/<id> reads orders created before the GET phase (--seed orders, spread at random).

The load comes from `wrk` (bench/wrk/*.lua; `apt-get install wrk`), or, if wrk is not installed or --tool python,
from Python threads with a requests.Session each (slower: the client then limits what is measured). Each
endpoint gets a --warmup seconds run first that is not counted. Results: a table, bench/results/<name>.json and
bench/results/<name>.png.

Example:  .venv/bin/python bench/api_load.py --duration 5
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
import redis  # noqa: E402
import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench import common as c  # noqa: E402
from cli.main import WORKER_THREADS  # noqa: E402

WRK_DIR = c.ROOT / "bench" / "wrk"
ENDPOINTS = ("post", "get")
LABEL = {"post": "POST /orders", "get": "GET /orders/<id>"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="api_load.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=20, help="seconds of load per endpoint (20)")
    p.add_argument("--connections", type=int, default=100, help="concurrent connections (100)")
    p.add_argument("--endpoints", default="post,get", help="which of post,get to load (both)")
    p.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto",
                   help="load generator: wrk if installed (auto), or Python threads")
    p.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--warmup", type=float, default=3, help="seconds of unmeasured load before each endpoint (3)")
    p.add_argument("--seed", type=int, default=500, help="orders created before the GET phase (500)")
    p.add_argument("--api-workers", type=int, default=2, help="gunicorn worker processes (2, as `bookmarket up`)")
    p.add_argument("--workers", type=int, default=0, help="Celery worker processes running the sagas during the "
                   "load (0: the API alone)")
    p.add_argument("--concurrency", type=int, default=WORKER_THREADS, help="threads per Celery worker process "
                   f"({WORKER_THREADS}, as `bookmarket worker`)")
    p.add_argument("--admission-limit", type=int, default=1_000_000, help="ADMISSION_MAX_WAITING_PAYMENTS "
                   "(1000000: POSTs are not turned away; with the product default, 500, and no worker, every POST "
                   "after the 500th pending order is answered 503; the API's pacing, ADMISSION_TARGET_MS, is off "
                   "too)")
    p.add_argument("--redis", default=c.REDIS_URL, help=f"broker ({c.REDIS_URL})")
    p.add_argument("--name", default="api_load", help="output name: bench/results/<name>.json/.png")
    p.add_argument("--keep-logs", action="store_true", help="keep the child processes' logs (path printed)")
    args = p.parse_args(argv)
    args.endpoint_list = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if not args.endpoint_list or set(args.endpoint_list) - set(ENDPOINTS):
        p.error("--endpoints: choose from post,get")
    if args.tool == "auto":
        args.tool = "wrk" if shutil.which("wrk") else "python"
    elif args.tool == "wrk" and not shutil.which("wrk"):
        p.error("wrk is not installed (apt-get install -y wrk), use --tool python")
    return args


# ------------------------------------------------------------------------------------------------------ load

def run_wrk(args: argparse.Namespace, url: str, endpoint: str, seconds: float,
            logs: Path, tag: str, id_range: tuple[int, int], monitor: Any) -> dict[str, Any]:
    script = WRK_DIR / ("post_orders.lua" if endpoint == "post" else "get_order.lua")
    argv = ["wrk", "-t", str(min(args.wrk_threads, args.connections)), "-c", str(args.connections),
            "-d", f"{max(int(round(seconds)), 1)}s", "--timeout", "10s", "-s", str(script), url]
    if endpoint == "get":
        argv += ["--", str(id_range[0]), str(id_range[1])]
    with contextlib.ExitStack() as local:
        started = time.monotonic()
        proc = c.start_process(local, f"wrk-{endpoint}-{tag}", argv, c.base_env(), logs)
        with c.Ticker(lambda: monitor(started)):
            while proc.alive():
                c.check_stop()
                time.sleep(0.1)
        output = proc.log_path.read_text(errors="replace")
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.popen.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {proc.popen.returncode}):\n{output[-2000:]}")
    raw = json.loads(line[len("BENCH_JSON "):])
    lat = {k: v / 1000 for k, v in raw["latency_us"].items()}
    errors = raw["errors"]
    seconds_run = raw["duration_us"] / 1e6
    return {"requests": raw["requests"], "duration_s": seconds_run,
            "requests_per_s": raw["requests"] / seconds_run if seconds_run else math.nan,
            "latency": {"p50_ms": lat["p50"], "p75_ms": lat["p75"], "p90_ms": lat["p90"], "p99_ms": lat["p99"],
                        "p99.9_ms": lat["p99.9"], "mean_ms": lat["mean"], "max_ms": lat["max"]},
            "statuses": raw.get("statuses", {}),
            "errors": {"non_2xx_3xx": errors["status"], "socket": errors["connect"] + errors["read"] +
                       errors["write"], "timeout": errors["timeout"]},
            "socket_errors": {k: errors[k] for k in ("connect", "read", "write")},
            "wrk_output": output.strip().splitlines()}


def run_python(args: argparse.Namespace, url: str, endpoint: str, seconds: float, id_range: tuple[int, int],
               monitor: Any) -> dict[str, Any]:
    """The fallback load generator: one thread and one requests.Session per connection."""
    import random

    latencies: list[float] = []
    errors = {"non_2xx_3xx": 0, "socket": 0, "timeout": 0}
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    started = time.monotonic()

    def client(n: int) -> None:
        session = c.api_session()
        rnd = random.Random(n)
        mine: list[float] = []
        counter = 0
        try:
            while time.monotonic() < deadline and not c.STOP.is_set():
                counter += 1
                t0 = time.perf_counter()
                try:
                    if endpoint == "post":
                        r = session.post(f"{url}/orders", json={"customer_id": 1 + counter % 50, "book_id": 1,
                                                                "qty": 1}, timeout=10)
                    else:
                        r = session.get(f"{url}/orders/{rnd.randint(*id_range)}", timeout=10)
                    ok = r.status_code < 400
                    kind = "non_2xx_3xx"
                    with lock:
                        statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                except requests.Timeout:
                    ok, kind = False, "timeout"
                except requests.RequestException:
                    ok, kind = False, "socket"
                mine.append((time.perf_counter() - t0) * 1000)
                if not ok:
                    with lock:
                        errors[kind] += 1
        finally:
            session.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.connections)]
    with c.Ticker(lambda: monitor(started)):
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            c.check_stop()
            for t in threads:
                t.join(timeout=0.2)
    elapsed = time.monotonic() - started
    summary = c.latency_summary(latencies)
    return {"requests": len(latencies), "duration_s": elapsed,
            "requests_per_s": len(latencies) / elapsed if elapsed else math.nan,
            "latency": {"p50_ms": summary["p50_ms"], "p75_ms": c.percentile(latencies, 75),
                        "p90_ms": c.percentile(latencies, 90), "p99_ms": summary["p99_ms"],
                        "p99.9_ms": c.percentile(latencies, 99.9), "mean_ms": summary["mean_ms"],
                        "max_ms": summary["max_ms"]},
            "statuses": statuses, "errors": errors}


# ------------------------------------------------------------------------------------------------------ main

def seed_orders(url: str, count: int) -> tuple[int, int]:
    """Create `count` orders through the API (8 threads); the range of their ids."""
    ids: list[int] = []
    lock = threading.Lock()

    def post(i: int, session: requests.Session) -> None:
        r = session.post(f"{url}/orders", json={"customer_id": 1 + i % 50, "book_id": 1, "qty": 1}, timeout=30)
        r.raise_for_status()
        with lock:
            ids.append(int(r.json()["id"]))

    errors = c.run_clients(8, count, post, c.api_session, threading.Event())
    if errors:
        raise RuntimeError(f"seeding orders failed: {errors[0]!r}")
    return min(ids), max(ids)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body(stack: contextlib.ExitStack) -> int:
        from infra.migrate import upgrade

        env_info = c.environment()
        behind = (f"{args.workers} Celery worker process(es) x {args.concurrency} running the sagas"
                  if args.workers else "no Celery worker: orders stay PENDING, step messages accumulate in the "
                  "run's own queue (deleted at the end)")
        c.log(f"API load: {args.connections} connections, {args.duration:g}s per endpoint, tool {args.tool}, "
              f"{args.api_workers} gunicorn workers; {behind} (load average {env_info['load_avg_at_start']})")
        logs = c.log_dir(stack, "api", args.keep_logs)
        url_db = c.create_database(stack, "bm_bench_api")
        upgrade(url_db)
        queue = f"bench-api-{c.run_id()}"
        stack.callback(_delete_queue_keys, args.redis, queue)
        sandbox = c.start_sandbox(stack, logs)
        env = c.base_env(DATABASE_URL=url_db, REDIS_URL=args.redis, SAGA_QUEUE=queue, **sandbox.provider_env(),
                         ADMISSION_MAX_WAITING_PAYMENTS=str(args.admission_limit), ADMISSION_TARGET_MS="0")
        procs = []
        if args.workers:
            procs = c.start_workers(stack, "workers.main", env, logs, args.workers, args.concurrency, queue, "saga",
                                    beat=True)
        api, url = c.start_api(stack, env, logs, args.api_workers)
        db = c.engine(stack, url_db)
        c.log(f"API at {url}; seeding {args.seed} orders for GET")
        id_range = seed_orders(url, max(args.seed, 1))
        api_root = psutil.Process(api.pid)
        cpu_procs: dict[int, psutil.Process] = {}  # kept across samples: cpu_percent() measures since the last call

        def monitor(endpoint: str, seconds: float) -> Any:
            def line(started: float) -> str:
                with db.connect() as conn:
                    orders = conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one()
                cpu = 0.0
                with contextlib.suppress(psutil.Error):
                    for proc in [api_root, *api_root.children(recursive=True)]:
                        cpu += cpu_procs.setdefault(proc.pid, proc).cpu_percent()
                return (f"{LABEL[endpoint]}: {time.monotonic() - started:4.1f}/{seconds:g}s, orders in db {orders}, "
                        f"API CPU {cpu:.0f}%")
            return line

        results = []
        for endpoint in args.endpoint_list:
            runs = []
            for tag, seconds in (("warmup", args.warmup), ("measure", args.duration)):
                if seconds <= 0:
                    continue
                c.log(f"{LABEL[endpoint]}: {tag} {seconds:g}s at {args.connections} connections")
                with c.RssSampler({"api": [api.pid], **({"workers": [p.pid for p in procs]} if procs else {})}) \
                        as rss:
                    if args.tool == "wrk":
                        res = run_wrk(args, url, endpoint, seconds, logs, tag, id_range,
                                      monitor(endpoint, seconds))
                    else:
                        res = run_python(args, url, endpoint, seconds, id_range, monitor(endpoint, seconds))
                api.check()
                res["memory"] = rss.report()
                runs.append((tag, res))
            res = dict(runs[-1][1])
            ok = sum(n for code, n in res.get("statuses", {}).items() if int(code) < 400)
            res.update({"endpoint": LABEL[endpoint], "tool": args.tool, "connections": args.connections,
                        "ok_requests_per_s": ok / res["duration_s"] if res["duration_s"] else math.nan})
            if sum(res["errors"].values()):
                c.log(f"{LABEL[endpoint]}: WARNING {res['errors']} (answers by status: {res.get('statuses')})")
            c.log(f"{LABEL[endpoint]}: {res['requests_per_s']:.0f} req/s, p50 {res['latency']['p50_ms']:.1f} ms, "
                  f"p99 {res['latency']['p99_ms']:.1f} ms")
            results.append(res)
        report(args, results, env_info, behind)
        return 0

    return c.run_main(body)


def _delete_queue_keys(url: str, queue: str) -> None:
    try:
        r = redis.Redis.from_url(url)
        r.delete(queue, *r.scan_iter(match=f"*{queue}*", count=1000))
        r.close()
    except redis.RedisError as exc:
        print(f"warning: could not clean Redis keys of {queue}: {exc}", file=sys.stderr, flush=True)


def report(args: argparse.Namespace, results: list[dict[str, Any]], env_info: dict[str, Any], behind: str) -> None:
    headers = ["endpoint", "tool", "conns", "seconds", "requests", "req/s", "ok req/s", "p50 ms", "p90 ms", "p99 ms",
               "max ms", "statuses", "errors", "API peak MB"]
    rows = []
    for r in results:
        codes = " ".join(f"{k}:{v}" for k, v in sorted(r.get("statuses", {}).items()))
        errors = ", ".join(f"{v} {k}" for k, v in r["errors"].items() if v) or "0"
        rows.append([r["endpoint"], r["tool"], r["connections"], r["duration_s"], r["requests"], r["requests_per_s"],
                     r["ok_requests_per_s"], r["latency"]["p50_ms"], r["latency"]["p90_ms"], r["latency"]["p99_ms"],
                     r["latency"]["max_ms"], codes, errors, r["memory"]["api"]["peak_rss_mb"]])
    c.print_table(f"API load ({args.api_workers} gunicorn workers x 16 threads; {behind})", headers, rows)
    command = c.command_line()
    payload = {"benchmark": "api_load", "command": command,
               "params": {k: v for k, v in vars(args).items() if k != "endpoint_list"},
               "behind_the_api": behind, "environment": env_info, "results": results,
               "notes": ["errors = non-2xx/3xx answers + socket errors + timeouts; ok req/s counts answers < 400",
                         "the load generator runs on the same 2-core machine as the API"]}
    json_path = c.write_json(args.name, payload)
    fig, axes = c.new_figure(1, 2, width=5.5)
    groups = [r["endpoint"] for r in results]
    c.grouped_bars(axes[0], groups, {"req/s": [r["requests_per_s"] for r in results]}, "requests per second",
                   f"throughput at {args.connections} connections")
    c.grouped_bars(axes[1], groups, {q: [r["latency"][f"{q}_ms"] for r in results] for q in ("p50", "p90", "p99")},
                   "ms", "latency")
    fig.suptitle(f"API under gunicorn ({args.api_workers} workers); {'with' if args.workers else 'without'} "
                 f"Celery workers; {args.tool}")
    png_path = c.save_png(args.name, fig, command)
    print(f"results: {json_path.relative_to(c.ROOT)}  chart: {png_path.relative_to(c.ROOT)}")
    print(f"command: {command}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
