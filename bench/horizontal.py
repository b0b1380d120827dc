"""Horizontal scaling: saga throughput with 1, 2 and 4 worker processes, and with two worker groups, and what bounds it.

For each provider latency (--latency-ms 0 400,620) and each configuration (--configs 1,2,4,2+2), on a fresh
database, the stack runs as saga_throughput.py runs "ours" (whose pieces this script imports): the API under
gunicorn, the sandbox providers, PostgreSQL, Redis, and worker processes started as `bookmarket worker` starts them
(Celery's thread pool, --threads each, the sweeper loop in every process, no beat). A configuration "N" is one
group of N processes; "A+B" is two groups, each started as another machine would start its workers: its own
environment (own heartbeat file, own hostnames), its own process trees, its own sweepers, sharing only PostgreSQL,
Redis and the queue. "A+B/payment" also sets STEP_QUEUES=payment=<queue>.payment and dedicates the first group to
that queue (WORKER_QUEUES) while the second consumes the rest.

--clients client threads POST --orders orders as fast as the API answers (faster than the workers finish them, so
the queue stays non-empty: its depth is sampled and shown); throughput = sagas completed / (last finish - first
saga created), end to end. Over the measured phase the script records what bounds it:
  - CPU by component (ms per completed saga): the API's processes, each worker process, the PostgreSQL backends
    connected to this run's database (their pids read from pg_stat_activity every --sample seconds, their CPU from
    /proc), the Redis server, the sandbox, this script's client threads, and the rest of the machine; and the
    machine's busy share (all cores, from /proc/stat);
  - PostgreSQL: pg_stat_database of the run's database (commits, tuples read and written, deadlocks) and, sampled,
    its backends waiting on a lock (pg_stat_activity.wait_event_type = 'Lock') and its connections;
  - Redis: INFO commandstats (commands per second and per saga) and its CPU; the queue depth (LLEN, every queue).
The bound is named from these: CPU when the machine's cores are busy (>= 85 %), else the database (lock waits,
or a core of backend CPU), the broker (a core of Redis CPU), the load (queue empty) or the calls in flight.
Redis is a private redis-server on a free port by default (--redis URL to use another: its CPU and command counts
then include every other user's).

The PostgreSQL ceiling printed under the table is an estimate from the measured backend CPU per saga: how many
sagas/s one core of PostgreSQL would carry for the statements a saga needs, were nothing else on that core.

Results: the table, the command line and bench/results/<name>.json.
Example:  .venv/bin/python bench/horizontal.py --orders 300 --configs 1,2 --latency-ms 0
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import urllib3  # noqa: E402

from bench import common as c  # noqa: E402
from bench.saga_throughput import SAGA_TERMINAL, _delete_queue_keys, _drain, _order_payload, _tally  # noqa: E402
from cli.main import WORKER_THREADS  # noqa: E402

BUSY_CPU = 0.85  # machine busy share from which CPU is named the bound


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="horizontal.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=1500, help="orders per run (1500)")
    p.add_argument("--clients", type=int, default=32, help="client threads posting orders (32)")
    p.add_argument("--configs", default="1,2,4,2+2,2+2/payment", help="worker processes per run: N (one group) or "
                   "A+B (two groups), A+B/payment (the first group consumes only the payment queue); comma-separated "
                   "(1,2,4,2+2,2+2/payment)")
    p.add_argument("--latency-ms", nargs="+", default=["0", "400,620"], help="sandbox latency of every provider "
                   "call: MS or MIN,MAX; each runs every configuration (0 400,620)")
    p.add_argument("--threads", type=int, default=WORKER_THREADS, help=f"threads per worker process ({WORKER_THREADS})")
    p.add_argument("--api-workers", type=int, default=2, help="gunicorn processes of the API (2)")
    p.add_argument("--warmup", type=int, default=20, help="warm-up orders per run, not measured (20)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for a run's sagas to end (300)")
    p.add_argument("--sample", type=float, default=0.5, help="seconds between samples (0.5)")
    p.add_argument("--redis", default="private", help="'private' (a redis-server of this run) or a Redis URL")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="a setting for the API and "
                   "every worker (repeatable), e.g. DB_POOL_SIZE=8")
    p.add_argument("--name", default="horizontal", help="output: bench/results/<name>.json")
    p.add_argument("--keep-logs", action="store_true")
    args = p.parse_args(argv)
    args.configurations = [parse_config(x) for x in args.configs.split(",") if x.strip()]
    args.latencies = [tuple(int(x) for x in v.split(","))[:2] for v in args.latency_ms]
    args.latencies = [(lat[0], lat[-1]) for lat in args.latencies]
    args.extra_env = dict(e.split("=", 1) for e in args.env)
    if args.orders < 1 or not args.configurations:
        p.error("--orders and --configs must be given")
    return args


def parse_config(text: str) -> dict[str, Any]:
    """"4" -> one group of 4; "2+2" -> two groups of 2; "2+2/payment" -> the first group consumes the payment queue."""
    spec, _, dedicated = text.strip().partition("/")
    groups = [int(n) for n in spec.split("+")]
    return {"label": text.strip(), "groups": groups, "processes": sum(groups), "dedicated": dedicated or None}


# --------------------------------------------------------------------------------------------------- sampling

class Sampler:
    """Every `interval` s: the queues' depth, this database's connections and lock waits, and the CPU time of each
    of its backends (a backend's first reading, or 0 for one born during the run, is subtracted at the end)."""

    def __init__(self, db: sa.Engine, dbname: str, r: redis.Redis, queues: list[str], interval: float) -> None:
        import psutil

        self._psutil = psutil
        self.db, self.dbname, self.r, self.queues, self.interval = db, dbname, r, queues, interval
        self.depth: list[int] = []
        self.lock_waits: list[int] = []
        self.connections: list[int] = []
        self.unfinished: list[int] = []
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _backends(self) -> list[tuple[int, str | None]]:
        with self.db.connect() as conn:
            self.unfinished.append(int(conn.execute(sa.text(
                "SELECT count(*) FROM sagas WHERE status IN ('RUNNING', 'COMPENSATING')")).scalar_one()))
            return [(int(pid), wait) for pid, wait in conn.execute(sa.text(
                "SELECT pid, wait_event_type FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                {"d": self.dbname})]

    def sample(self, first: bool = False) -> None:
        backends = self._backends()
        self.lock_waits.append(sum(1 for _, wait in backends if wait == "Lock"))
        self.connections.append(len(backends))
        for pid, _ in backends:
            try:
                t = self._psutil.Process(pid).cpu_times()
            except self._psutil.Error:
                continue
            self.last[pid] = t.user + t.system
            self.first.setdefault(pid, self.last[pid] if first else 0.0)
        with self.r.pipeline(transaction=False) as pipe:
            for q in self.queues:
                pipe.llen(q)
            self.depth.append(sum(int(n) for n in pipe.execute()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.sample()

    def __enter__(self) -> Sampler:
        self.sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.sample()

    def backend_cpu_s(self) -> float:
        return sum(self.last[pid] - self.first.get(pid, 0.0) for pid in self.last)


def pg_stats(db: sa.Engine, dbname: str) -> dict[str, int]:
    with db.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted, "
            "blks_read, blks_hit, deadlocks FROM pg_stat_database WHERE datname = :d"), {"d": dbname}).mappings().one()
    return {k: int(v) for k, v in row.items()}


def redis_stats(r: redis.Redis) -> dict[str, float]:
    """Commands executed so far (INFO commandstats, summed) and the server's CPU seconds (INFO cpu)."""
    commands = r.info("commandstats")
    cpu = r.info("cpu")
    return {"calls": sum(int(v["calls"]) for v in commands.values()),
            "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
            "by_command": {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in commands.items()}}


def pg_settings(db: sa.Engine) -> dict[str, str]:
    with db.connect() as conn:
        return {name: conn.execute(sa.text(f"SHOW {name}")).scalar_one() for name in
                ("server_version", "max_connections", "fsync", "synchronous_commit", "shared_buffers")}


def start_private_redis(stack: contextlib.ExitStack, logs: Path) -> tuple[str, int]:
    port = c.free_port()
    proc = c.start_process(stack, "redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                            "--appendonly", "no", "--dir", str(logs)], c.base_env(), logs)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def pings() -> bool:
        with contextlib.suppress(redis.RedisError):
            return bool(client.ping())
        return False

    c.wait_until(pings, 20, "the private redis-server", 0.1, [proc])
    client.close()
    return url, proc.pid


# --------------------------------------------------------------------------------------------------- one run

def run(args: argparse.Namespace, sandbox: c.Sandbox, config: dict[str, Any], latency: tuple[int, int],
        redis_url: str, redis_pid: int | None, logs: Path) -> dict[str, Any]:
    from infra.config import Settings
    from infra.migrate import upgrade

    label = f"{config['label']} @ {latency[0]}-{latency[1]} ms"
    with contextlib.ExitStack() as stack:
        url = c.create_database(stack, "bm_bench_hz")
        dbname = url.rsplit("/", 1)[-1]
        upgrade(url)
        queue = f"bench-hz-{c.run_id()}"
        stack.callback(_delete_queue_keys, redis_url, queue)
        env = c.base_env(DATABASE_URL=url, REDIS_URL=redis_url, SAGA_QUEUE=queue, **sandbox.provider_env(),
                         ADMISSION_MAX_WAITING_PAYMENTS="1000000", ADMISSION_TARGET_MS="0", **args.extra_env)
        if config["dedicated"]:
            env["STEP_QUEUES"] = f"{config['dedicated']}={queue}.{config['dedicated']}"
        settings = Settings.from_env(env)
        queues = list(settings.all_queues())
        groups: list[list[c.Proc]] = []
        for g, count in enumerate(config["groups"], 1):
            # another machine: its own settings (heartbeat file, hostnames), processes, sweepers
            group_env = dict(env, WORKER_HEARTBEAT_FILE=str(logs / f"{queue}-g{g}.heartbeat"))
            consumed = queues
            if config["dedicated"]:
                consumed = [q for q in queues if q.endswith(f".{config['dedicated']}")] if g == 1 else \
                    [q for q in queues if not q.endswith(f".{config['dedicated']}")]
                group_env["WORKER_QUEUES"] = ",".join(consumed)
            groups.append(c.start_workers(stack, "workers.main", group_env, logs, count, args.threads,
                                          ",".join(consumed), f"g{g}", beat=False))
        procs = [p for group in groups for p in group]
        api, api_url = c.start_api(stack, env, logs, args.api_workers)
        db = c.engine(stack, url)
        r = redis.Redis.from_url(redis_url)
        stack.callback(r.close)
        c.log(f"{label}: {len(procs)} worker process(es) in {len(groups)} group(s) x {args.threads} threads, "
              f"queues {queues}")

        def counts(after: int) -> dict[str, int]:
            with db.connect() as conn:
                rows = conn.execute(sa.text("SELECT status, count(*) FROM sagas WHERE id > :a AND kind = 'order' "
                                            "GROUP BY status"), {"a": after}).all()
            return {status: n for status, n in rows}

        posted = [0, 0]  # accepted, failed
        lock = threading.Lock()

        def client() -> urllib3.HTTPConnectionPool:
            return urllib3.connection_from_url(api_url, maxsize=1, retries=False, timeout=60)

        def post(i: int, pool: urllib3.HTTPConnectionPool) -> None:
            ok = False
            with contextlib.suppress(urllib3.exceptions.HTTPError):
                ok = pool.urlopen("POST", "/orders", body=json.dumps(_order_payload(i)).encode(),
                                  headers={"Content-Type": "application/json", **c.AUTH}).status == 202
            with lock:
                posted[0 if ok else 1] += 1

        stop = threading.Event()
        c.run_clients(min(args.clients, max(args.warmup, 1)), args.warmup, post, client, stop)
        c.wait_until(lambda: sum(counts(0).get(s, 0) for s in SAGA_TERMINAL) >= sum(counts(0).values()),
                     args.timeout, "the warm-up sagas", 0.2, [*procs, api])
        with db.connect() as conn:
            baseline = conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM sagas")).scalar_one()
        posted[:] = [0, 0]

        def progress() -> str:
            now = counts(baseline)
            return (f"{label}: posted {posted[0]} (failed {posted[1]}), "
                    f"{sum(now.get(s, 0) for s in SAGA_TERMINAL)} of {sum(now.values())} sagas ended")

        groups_cpu = {"api": [api.pid], "sandbox": [sandbox.proc.pid],
                      **{f"g{g}w{i + 1}": [p.pid] for g, group in enumerate(groups, 1) for i, p in enumerate(group)}}
        if redis_pid is not None:
            groups_cpu["redis"] = [redis_pid]
        pg0, redis0 = pg_stats(db, dbname), redis_stats(r)
        with Sampler(db, dbname, r, queues, args.sample) as sampler, c.CpuMeter(groups_cpu, named={}) as cpu, \
                c.Ticker(progress, 2.0):
            errors = c.run_clients(args.clients, args.orders, post, client, stop)
            if errors:
                raise RuntimeError(f"a client thread failed: {errors[0]!r}")

            def drained() -> bool:
                try:
                    now = counts(baseline)
                except sa.exc.OperationalError as exc:  # a PostgreSQL shared with others may be out of connections
                    c.log(f"{label}: could not count the sagas ({str(exc).splitlines()[0]}); trying again")
                    return False
                return sum(now.get(s, 0) for s in SAGA_TERMINAL) >= sum(now.values())

            _drain(drained, args.timeout, "every saga to end", [*procs, api], label)
        pg1, redis1 = pg_stats(db, dbname), redis_stats(r)
        with db.connect() as conn:
            rows = conn.execute(sa.text("SELECT status, created_at, finished_at FROM sagas WHERE id > :a AND "
                                        "kind = 'order'"), {"a": baseline}).all()
        done = [x for x in rows if x.status == "COMPLETED" and x.finished_at is not None]
        first = min((x.created_at.timestamp() for x in rows), default=None)
        last = max((x.finished_at.timestamp() for x in done), default=None)
        span = (last - first) if first is not None and last is not None else float("nan")
        n = len(done)
        report = cpu.report(n)
        seconds = dict(report["cpu_s"])
        seconds["postgres"] = round(sampler.backend_cpu_s(), 2)
        if redis_pid is None:  # a shared Redis: its own account of its CPU (every user's)
            seconds["redis"] = round(redis1["cpu_s"] - redis0["cpu_s"], 2)
        # "other" was the machine's busy time not in a group: take the backends (and a shared Redis) out of it
        seconds["other"] = round(max(report["cpu_s"]["other"] - seconds["postgres"]
                                     - (seconds["redis"] if redis_pid is None else 0), 0.0), 2)
        workers_s = {k: v for k, v in seconds.items() if k.startswith("g")}
        components = {"api": seconds["api"], "workers": sum(workers_s.values()), "postgres": seconds["postgres"],
                      "redis": seconds["redis"], "sandbox": seconds["sandbox"], "client": seconds["client"],
                      "other": seconds["other"]}
        wall = report["wall_s"]
        pg_delta = {k: pg1[k] - pg0[k] for k in pg1}
        redis_calls = redis1["calls"] - redis0["calls"]
        by_command = {k: v - redis0["by_command"].get(k, 0) for k, v in redis1["by_command"].items()}
        result = {
            "config": config["label"], "groups": config["groups"], "processes": config["processes"],
            "dedicated_queue": config["dedicated"], "latency_ms": list(latency), "threads": args.threads,
            "orders": args.orders, "posted": posted[0], "post_failures": posted[1], "completed": n,
            "statuses": _tally(x.status for x in rows), "span_s": span,
            "throughput_per_s": n / span if span and span > 0 else float("nan"),
            "cpu": {"seconds": seconds, "wall_s": wall, "busy_cores": report["busy_cores"], "cores": report["cores"],
                    "busy_share": report["busy_cores"] / report["cores"] if report["cores"] else None,
                    "ms_per_saga": {k: round(v * 1000 / n, 2) if n else None for k, v in components.items()},
                    "ms_per_saga_total": round(sum(components.values()) * 1000 / n, 2) if n else None,
                    "worker_process_cores": {k: round(v / wall, 2) for k, v in workers_s.items()} if wall else {},
                    "postgres_backend_cores": round(seconds["postgres"] / wall, 2) if wall else None,
                    "redis_cores": round(seconds["redis"] / wall, 2) if wall else None},
            "postgres": {**pg_delta, "commits_per_saga": round(pg_delta["xact_commit"] / n, 2) if n else None,
                         "rows_written_per_saga": round((pg_delta["tup_inserted"] + pg_delta["tup_updated"]
                                                         + pg_delta["tup_deleted"]) / n, 2) if n else None,
                         "lock_wait_samples": sum(1 for x in sampler.lock_waits if x),
                         "lock_waiting_max": max(sampler.lock_waits, default=0),
                         "samples": len(sampler.lock_waits),
                         "connections_max": max(sampler.connections, default=0),
                         "connections_median": statistics.median(sampler.connections) if sampler.connections else 0},
            "redis": {"commands": redis_calls, "commands_per_s": round(redis_calls / wall, 1) if wall else None,
                      "commands_per_saga": round(redis_calls / n, 1) if n else None,
                      "top_commands": dict(sorted(by_command.items(), key=lambda kv: -kv[1])[:8]),
                      "private_server": redis_pid is not None},
            "queue_depth": {"median": statistics.median(sampler.depth) if sampler.depth else 0,
                            "max": max(sampler.depth, default=0),
                            "empty_share": round(sum(1 for d in sampler.depth if d == 0) / len(sampler.depth), 2)
                            if sampler.depth else None, "samples": len(sampler.depth)},
            # sagas started and not ended: the work in the system (LLEN misses the messages the workers reserved:
            # prefetch takes up to one per thread out of the list)
            "unfinished_sagas": {"median": statistics.median(sampler.unfinished) if sampler.unfinished else 0,
                                 "max": max(sampler.unfinished, default=0),
                                 "empty_share": round(sum(1 for d in sampler.unfinished if d == 0)
                                                      / len(sampler.unfinished), 2) if sampler.unfinished else None},
            "db_pool_size": settings.db_pool_size,
        }
        result["bound"] = bound(result)
        c.log(f"{label}: {n}/{args.orders} completed, {result['throughput_per_s']:.1f} sagas/s, "
              f"{report['busy_cores']}/{report['cores']} cores busy; bound: {result['bound']}")
        return result


def bound(r: dict[str, Any]) -> str:
    """Name what limited a run from its measurements (see the module's docstring)."""
    cpu, pg, q = r["cpu"], r["postgres"], r["unfinished_sagas"]
    if cpu["busy_share"] is not None and cpu["busy_share"] >= BUSY_CPU:
        per = cpu["ms_per_saga"]
        ours = {k: v for k, v in per.items() if v is not None and k not in ("other", "client")}
        top = max(ours, key=lambda k: ours[k])
        share = per["other"] / cpu_total if (cpu_total := r["cpu"]["ms_per_saga_total"]) else 0
        return (f"CPU ({cpu['busy_cores']:.2f} of {cpu['cores']} cores busy; most: {top}"
                + (f"; {share:.0%} outside the stack" if share >= 0.1 else "") + ")")
    if pg["samples"] and pg["lock_wait_samples"] / pg["samples"] > 0.2:
        return f"database locks (waits in {pg['lock_wait_samples']} of {pg['samples']} samples)"
    if (cpu["postgres_backend_cores"] or 0) >= 0.8:
        return f"database CPU ({cpu['postgres_backend_cores']} cores)"
    if (cpu["redis_cores"] or 0) >= 0.8:
        return f"broker CPU ({cpu['redis_cores']} cores)"
    if q["empty_share"] is not None and q["empty_share"] > 0.5:
        return "load (no saga in flight most of the run)"
    return "calls in flight (threads x provider latency), CPU not saturated"


def fit_pool(args: argparse.Namespace, admin: sa.Engine, max_connections: int) -> None:
    """Every run's DB_POOL_SIZE (unless --env gives one): the product's default, lowered if need be so that the
    largest configuration's budget (README, Running many workers: processes x (DB_POOL_SIZE + 1) for the workers,
    api-workers x API_DB_POOL_SIZE for the API) fits in what PostgreSQL has left, less 10 for this script and others."""
    from infra.config import Settings

    if "DB_POOL_SIZE" in args.extra_env:
        return
    default = Settings.from_env({}).db_pool_size
    api_pool = Settings.from_env({}).api_db_pool_size
    with admin.connect() as conn:
        in_use = int(conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity")).scalar_one())
        reserved = int(conn.execute(sa.text("SHOW superuser_reserved_connections")).scalar_one())
    free = max_connections - reserved - in_use - 10
    most = max(x["processes"] for x in args.configurations)
    fits = (free - most - args.api_workers * api_pool) // most
    pool = max(1, min(default, fits))
    if pool < default:
        c.log(f"DB_POOL_SIZE {pool} for every run instead of {default}: {most} worker processes x ({default} + 1) + "
              f"{args.api_workers} API processes x {api_pool} = {most * (default + 1) + args.api_workers * api_pool} "
              f"connections would not fit the {free} PostgreSQL has free (max_connections {max_connections})")
    args.extra_env["DB_POOL_SIZE"] = str(pool)


# --------------------------------------------------------------------------------------------------- report

def report(args: argparse.Namespace, results: list[dict[str, Any]], env: dict[str, Any],
           pg_conf: dict[str, str]) -> None:
    rows = []
    for r in results:
        base = next((x for x in results if x["latency_ms"] == r["latency_ms"] and x["processes"] == 1
                     and len(x["groups"]) == 1), None)
        r["speedup_vs_1"] = r["throughput_per_s"] / base["throughput_per_s"] if base else None
        per, pg = r["cpu"]["ms_per_saga"], r["postgres"]
        rows.append(["-".join(str(x) for x in sorted(set(r["latency_ms"]))), r["config"], len(r["groups"]),
                     r["completed"], r["throughput_per_s"], r["speedup_vs_1"],
                     f"{r['cpu']['busy_cores']:.2f}/{r['cpu']['cores']}",
                     " ".join(f"{v:.2f}" for v in r["cpu"]["worker_process_cores"].values()),
                     per["api"], per["workers"], per["postgres"], per["redis"], per["sandbox"], per["client"],
                     per["other"], r["cpu"]["ms_per_saga_total"], pg["commits_per_saga"],
                     f"{pg['lock_wait_samples']}/{pg['samples']} (max {pg['lock_waiting_max']})",
                     pg["connections_max"], r["redis"]["commands_per_s"], r["redis"]["commands_per_saga"],
                     f"{r['queue_depth']['median']:.0f}/{r['queue_depth']['max']}",
                     f"{r['unfinished_sagas']['median']:.0f}/{r['unfinished_sagas']['max']}", r["bound"]])
    c.print_table(f"horizontal scaling: {args.orders} orders per run, {args.clients} clients, {args.threads} threads "
                  "per worker process; CPU in ms per completed saga",
                  ["latency ms", "workers", "groups", "completed", "sagas/s", "x 1 worker", "busy cores",
                   "cores per worker proc", "api", "workers", "postgres", "redis", "sandbox", "client", "other",
                   "total", "pg commits/saga", "lock-wait samples", "pg conns max", "redis cmd/s", "redis cmd/saga",
                   "queue median/max", "in flight median/max", "bound"], rows, digits=2)
    print(markdown(results), flush=True)
    pg_ms = [r["cpu"]["ms_per_saga"]["postgres"] for r in results if r["cpu"]["ms_per_saga"]["postgres"]]
    redis_ms = [r["cpu"]["ms_per_saga"]["redis"] for r in results if r["cpu"]["ms_per_saga"]["redis"]]
    ceiling = {}
    if pg_ms:
        worst = max(pg_ms)
        ceiling = {"postgres_ms_per_saga_range": [min(pg_ms), worst],
                   "sagas_per_s_per_postgres_core": round(1000 / worst, 1)}
        print(f"PostgreSQL backends: {min(pg_ms):.2f}-{worst:.2f} ms CPU per saga over these runs: one core of "
              f"PostgreSQL would carry about {1000 / worst:.0f} sagas/s of these statements (estimate, at the "
              f"highest; fsync={pg_conf.get('fsync')}, synchronous_commit={pg_conf.get('synchronous_commit')}, "
              f"max_connections={pg_conf.get('max_connections')})")
    if redis_ms:
        ceiling.update({"redis_ms_per_saga_range": [min(redis_ms), max(redis_ms)],
                        "sagas_per_s_per_redis_core": round(1000 / max(redis_ms), 1)})
        print(f"Redis: {min(redis_ms):.2f}-{max(redis_ms):.2f} ms CPU per saga: its single thread would carry about "
              f"{1000 / max(redis_ms):.0f} sagas/s (estimate)")
    command = c.command_line()
    path = c.write_json(args.name, {
        "benchmark": "horizontal", "command": command, "environment": env, "postgres": pg_conf,
        "params": {k: v for k, v in vars(args).items() if k != "configurations"}, "results": results,
        "ceiling_estimates": ceiling,
        "notes": ["throughput = completed / (last finish - first saga created)",
                  "CPU ms per saga: process CPU (user+system) over the measured phase / completed sagas; postgres = "
                  "the backends of this run's database; other = the machine's busy time in no group",
                  "the client threads, the API and the sandbox share the machine's cores with the workers"]})
    print(f"results: {path.relative_to(c.ROOT)}")
    print(f"command: {command}", flush=True)


def markdown(results: list[dict[str, Any]]) -> str:
    """The table as the README shows it (README, Running many workers), ready to paste."""
    lines = ["| latency ms | workers | groups | sagas/s | × 1 worker | busy cores | CPU ms/saga: api / workers / "
             "postgres / redis / sandbox / other | PG commits/saga | lock-wait samples | PG conns max | "
             "Redis cmd/saga | in flight median | bound |", "|" + "---|" * 13]
    for r in results:
        per, pg = r["cpu"]["ms_per_saga"], r["postgres"]
        speedup = c.fmt(r.get("speedup_vs_1"), 2)
        parts = " / ".join(c.fmt(per[k]) for k in ("api", "workers", "postgres", "redis", "sandbox", "other"))
        lines.append(f"| {'-'.join(str(x) for x in sorted(set(r['latency_ms'])))} | {r['config']} | "
                     f"{len(r['groups'])} | {c.fmt(r['throughput_per_s'])} | {speedup} | "
                     f"{r['cpu']['busy_cores']:.2f}/{r['cpu']['cores']} | {parts} | {c.fmt(pg['commits_per_saga'])} | "
                     f"{pg['lock_wait_samples']}/{pg['samples']} | {pg['connections_max']} | "
                     f"{c.fmt(r['redis']['commands_per_saga'], 0)} | {r['unfinished_sagas']['median']:.0f} | "
                     f"{r['bound'].split(' (')[0]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body(stack: contextlib.ExitStack) -> int:
        env = c.environment()
        c.log(f"horizontal: {args.orders} orders per run, configs {[x['label'] for x in args.configurations]}, "
              f"latencies {args.latencies} (load average {env['load_avg_at_start']})")
        logs = c.log_dir(stack, "horizontal", args.keep_logs)
        sandbox = c.start_sandbox(stack, logs)
        redis_url, redis_pid = (start_private_redis(stack, logs) if args.redis == "private" else (args.redis, None))
        admin = c.engine(stack, c.PG_ADMIN_URL)
        pg_conf = pg_settings(admin)
        fit_pool(args, admin, int(pg_conf["max_connections"]))
        results = []
        for latency in args.latencies:
            for config in args.configurations:
                sandbox.reset(latency)
                c.log(f"--- {config['label']} worker process(es), latency {latency[0]}-{latency[1]} ms")
                results.append(run(args, sandbox, config, latency, redis_url, redis_pid, logs))
        env["elapsed_s"] = round(time.monotonic() - c._T0, 1)
        report(args, results, env, pg_conf)
        return 0 if all(r["completed"] == args.orders for r in results) else 1

    return c.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
