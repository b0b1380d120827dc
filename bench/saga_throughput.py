"""Saga throughput and latency: N orders through the real stack, against a bare Celery chain and DBOS.

For each provider latency (--latency-ms 0 400,620: every call of every system), worker count W (--workers 1,2),
system (--systems ours,bare,dbos) and concurrency (--concurrency, --dbos-concurrency), on a fresh database:

  ours   PostgreSQL (migrated), W Celery worker processes started as `bookmarket worker` starts them (Celery's
         thread pool, --concurrency threads each: the product's default unless given; --pool prefork for the
         old way), the sweeper beat in the first, and the API under gunicorn as `bookmarket up` runs it. C client
         threads (a keep-alive urllib3 connection each) POST /orders N times; the POST time of every order is
         recorded. Then the saga table is polled until every saga is terminal. Latency is
         sagas.finished_at - sagas.created_at (POST accepted -> saga COMPLETED), read with SQL afterwards.
  bare   The same provider calls as a Celery chain bare.pay | bare.ship | bare.notify (bench/bare_chain.py) with
         the same Celery configuration and pool, W worker processes x --concurrency, no database and no result
         backend: the client threads publish the chains; the last task writes the finish time into a Redis hash.
  dbos   The same provider calls as a DBOS workflow of three steps (bench/dbos_app.py), its system database on
         the same PostgreSQL. --dbos-mode queue (default): W DBOS processes dequeue from a DBOS queue
         (worker_concurrency --dbos-concurrency, polling every --dbos-poll s) and the client threads enqueue with
         a DBOSClient; --dbos-mode start: W DBOS processes each start their share of the N workflows with
         DBOS.start_workflow from their own threads (the workflows run in those processes). Latency is
         workflow_status.completed_at - created_at.

Throughput = completed / (last finish - first start); failures = orders that did not complete (POST or publish
errors, sagas that ended COMPENSATED/FAILED, chains or workflows that failed, anything unfinished at --timeout).
The sandbox answers with --latency-ms (0 by default). Peak RSS of the API's and the workers' process trees is
sampled every 0.2 s, and the CPU time of every process group (client, API, workers, sandbox, PostgreSQL, Redis)
is divided by the completed sagas. With --repeat N every system runs N times, interleaved, and the table shows
the median run with the range. The ratios table sets ours (at the product's default concurrency) against ours at
latency 0 in the same run, the bare chain and DBOS at their defaults and at the best concurrency tried. Results: the
tables, bench/results/<name>.json and bench/results/<name>.png.

Example:  .venv/bin/python bench/saga_throughput.py --orders 100 --workers 1
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
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
from cli.main import WORKER_THREADS  # noqa: E402

SYSTEMS = ("ours", "bare", "dbos")
SAGA_TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")
DBOS_TERMINAL = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
BOOK_ID, BOOK_PRICE_CENTS = 1, 4299  # the seed catalog's book 1; the baselines send the same amounts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="saga_throughput.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=2000, help="orders per system and worker count (2000)")
    p.add_argument("--clients", type=int, default=32, help="concurrent client threads (32)")
    p.add_argument("--workers", default="1,2", help="worker process counts to try, comma-separated (1,2)")
    p.add_argument("--pool", choices=("threads", "prefork"), default="threads", help="Celery pool of ours and of the "
                   "bare chain (threads, as `bookmarket worker`)")
    p.add_argument("--concurrency", default=None, help="per worker process, comma-separated to try several: threads "
                   f"(the product's default, {WORKER_THREADS}) or prefork children (2)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="which of ours,bare,dbos to run (all)")
    p.add_argument("--api-workers", type=int, default=2, help="gunicorn worker processes of the API (2, as "
                   "`bookmarket up`)")
    p.add_argument("--repeat", type=int, default=1, help="runs per system and worker count; the table shows the run "
                   "with the median throughput and the range over all runs (1)")
    p.add_argument("--warmup", type=int, default=20, help="warm-up orders per phase, not measured (20)")
    p.add_argument("--latency-ms", nargs="+", default=["0"], help="sandbox provider latency on every call: MS or "
                   "MIN,MAX; several (`0 400,620`) run every system at each, in one run (0)")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for a phase's orders to finish (600)")
    p.add_argument("--dbos-mode", choices=("queue", "start"), default="queue", help="how DBOS workflows are "
                   "started (queue)")
    p.add_argument("--dbos-concurrency", default="16", help="queue mode: workflows running at once per DBOS process, "
                   "comma-separated to try several (16; DBOS runs workflows as threads)")
    p.add_argument("--dbos-poll", type=float, default=0.05, help="queue mode: DBOS queue polling interval in "
                   "seconds (0.05; DBOS's default is 1)")
    p.add_argument("--admission-limit", type=int, default=1_000_000, help="ADMISSION_MAX_WAITING_PAYMENTS for the "
                   "API (1000000: every order is admitted, so the saga engine is measured, not admission control; "
                   "the product default is 500; the API's pacing, ADMISSION_TARGET_MS, is off too). A 503 answer is "
                   "retried after its Retry-After and counted")
    p.add_argument("--redis", default=c.REDIS_URL, help=f"broker of our saga ({c.REDIS_URL})")
    p.add_argument("--broker", default="", help="BROKER_URL of our saga: empty (the Redis of --redis) or RabbitMQ, "
                   "e.g. amqp://guest:guest@127.0.0.1:5672// (the run's quorum queue is deleted afterwards)")
    p.add_argument("--bare-redis", default=_redis_db(c.REDIS_URL, 3), help="broker and finish hash of the bare "
                   "chain (the same Redis, db 3)")
    p.add_argument("--name", default="saga_throughput", help="output name: bench/results/<name>.json/.png")
    p.add_argument("--keep-logs", action="store_true", help="keep the child processes' logs (path printed)")
    args = p.parse_args(argv)
    default_concurrency = WORKER_THREADS if args.pool == "threads" else 2
    args.concurrencies = [int(x) for x in (args.concurrency or str(default_concurrency)).split(",") if x.strip()]
    args.default_concurrency = default_concurrency if default_concurrency in args.concurrencies else \
        args.concurrencies[0]
    args.dbos_concurrencies = [int(x) for x in str(args.dbos_concurrency).split(",") if x.strip()]
    args.concurrency, args.dbos_concurrency = args.concurrencies[0], args.dbos_concurrencies[0]
    args.worker_counts = [int(x) for x in args.workers.split(",") if x.strip()]
    args.system_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.system_list) - set(SYSTEMS)
    if unknown or not args.system_list:
        p.error(f"--systems: choose from {','.join(SYSTEMS)}")
    if args.orders < 1 or args.clients < 1 or args.repeat < 1 or not args.worker_counts or min(args.worker_counts) < 1:
        p.error("--orders, --clients and --workers must be positive")
    args.latencies = []
    for value in args.latency_ms:
        bounds = [int(x) for x in value.split(",")]
        args.latencies.append((bounds[0], bounds[-1]))
    args.latency = args.latencies[0]
    return args


def variants(args: argparse.Namespace, system: str) -> list[argparse.Namespace]:
    """The settings to run `system` with: one per concurrency given for it."""
    if system == "dbos":
        return [argparse.Namespace(**{**vars(args), "dbos_concurrency": n}) for n in args.dbos_concurrencies]
    return [argparse.Namespace(**{**vars(args), "concurrency": n}) for n in args.concurrencies]


def _redis_db(url: str, db: int) -> str:
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/{db}"


def _delete_queue_keys(url: str, queue: str, *keys: str) -> None:
    """Remove a run's keys from Redis: the queue, kombu's bindings of it, the app's circuit-breaker state
    (bookmarket:<queue>:...) and the given hashes. Queue names are random, so the pattern matches only ours."""
    try:
        r = redis.Redis.from_url(url)
        doomed = [*keys, queue, *r.scan_iter(match=f"*{queue}*", count=1000)]
        r.delete(*doomed)
        r.close()
    except redis.RedisError as exc:
        print(f"warning: could not clean Redis keys of {queue}: {exc}", file=sys.stderr, flush=True)


def _delete_rabbitmq_queue(url: str, queue: str) -> None:
    """Remove a run's quorum queue (and its exchange) from RabbitMQ."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.default_channel.queue_delete(queue)
            conn.default_channel.exchange_delete(queue)
    except Exception as exc:  # noqa: BLE001
        print(f"warning: could not delete RabbitMQ queue {queue}: {exc}", file=sys.stderr, flush=True)


def _order_payload(i: int) -> dict[str, int]:
    return {"customer_id": 1 + i % 50, "book_id": BOOK_ID, "qty": 1}


class Phase:
    """What one system measured at one worker count; filled in by the run_* functions."""

    def __init__(self, system: str, workers: int, args: argparse.Namespace) -> None:
        self.system = system
        self.workers = workers
        if system != "dbos":
            self.concurrency = args.concurrency  # Celery threads or prefork children per worker process
            self.unit = "thr" if args.pool == "threads" else "proc"
        elif args.dbos_mode == "queue":
            self.concurrency, self.unit = args.dbos_concurrency, "wf"  # DBOS queue worker_concurrency
        else:
            self.concurrency, self.unit = math.ceil(args.clients / workers), "start"  # starting threads per process
        self.orders = args.orders
        self.starts: list[float | None] = [None] * args.orders  # epoch s, taken by the client
        self.post_ms: list[float] = []
        self.submit_errors = 0
        self.post_lock = threading.Lock()
        self.result: dict[str, Any] = {}

    def submitted(self, i: int, started: float, ok: bool) -> None:
        with self.post_lock:
            self.starts[i] = started
            self.post_ms.append((time.time() - started) * 1000)
            if not ok:
                self.submit_errors += 1

    @property
    def posted(self) -> int:
        return len(self.post_ms)

    def finish(self, latencies_ms: list[float], first_start: float | None, last_finish: float | None,
               not_completed: int, unfinished: int, memory: dict[str, Any], extra: dict[str, Any]) -> None:
        completed = len(latencies_ms)
        span = (last_finish - first_start) if first_start is not None and last_finish is not None else math.nan
        self.result = {
            "system": self.system, "measured": True, "workers": self.workers, "concurrency": self.concurrency,
            "concurrency_unit": {"proc": "prefork children per worker process", "wf": "DBOS queue "
                                 "worker_concurrency per process", "thr": "Celery threads per worker process",
                                 "start": "threads starting workflows per process"}[
                                     self.unit],
            "label": f"{self.workers} x {self.concurrency}{'' if self.unit == 'proc' else ' ' + self.unit}",
            "orders": self.orders, "completed": completed,
            "failures": self.orders - completed,
            "failure_detail": {"submit_errors": self.submit_errors, "ended_not_completed": not_completed,
                               "unfinished_at_timeout": unfinished},
            "throughput_per_s": completed / span if span and span > 0 else math.nan,
            "span_s": span,
            "latency": c.latency_summary(latencies_ms),
            "submit": {**c.latency_summary(self.post_ms),
                       "rate_per_s": self.posted / self._submit_span() if self._submit_span() else math.nan},
            "memory": memory,
            **extra,
        }

    def _submit_span(self) -> float:
        times = [t for t in self.starts if t is not None]
        return (max(times) - min(times)) if len(times) > 1 else 0.0


def not_measured(system: str, workers: int, reason: str) -> dict[str, Any]:
    c.log(f"{system} w={workers}: NOT MEASURED: {reason}")
    return {"system": system, "measured": False, "workers": workers, "reason": reason}


# ------------------------------------------------------------------------------------------------------ ours

def run_ours(args: argparse.Namespace, sandbox: c.Sandbox, workers: int, logs: Path) -> dict[str, Any]:
    from infra.migrate import upgrade

    phase = Phase("ours", workers, args)
    with contextlib.ExitStack() as stack:
        url = c.create_database(stack, "bm_bench")
        c.log(f"ours w={workers}: migrating {url.rsplit('/', 1)[-1]}")
        upgrade(url)
        queue = f"bench-saga-{c.run_id()}"
        stack.callback(_delete_queue_keys, args.redis, queue)
        if args.broker:
            stack.callback(_delete_rabbitmq_queue, args.broker, queue)
        env = c.base_env(DATABASE_URL=url, REDIS_URL=args.redis, BROKER_URL=args.broker, SAGA_QUEUE=queue,
                         **sandbox.provider_env(),
                         ADMISSION_MAX_WAITING_PAYMENTS=str(args.admission_limit), ADMISSION_TARGET_MS="0")
        procs = c.start_workers(stack, "workers.main", env, logs, workers, args.concurrency, queue, "saga", beat=True,
                                pool=args.pool)
        api, api_url = c.start_api(stack, env, logs, args.api_workers)
        db = c.engine(stack, url)
        c.log(f"ours w={workers}: API {api_url}, {workers} worker process(es) x {args.concurrency}, queue {queue}, "
              f"broker {'RabbitMQ' if args.broker.startswith('amqp') else 'Redis'}")

        def counts(after: int) -> dict[str, int]:
            with db.connect() as conn:
                rows = conn.execute(sa.text("SELECT status, count(*) FROM sagas WHERE id > :a AND kind = 'order' "
                                            "GROUP BY status"), {"a": after}).all()
            return {status: n for status, n in rows}

        rejected = [0]

        def client() -> urllib3.HTTPConnectionPool:
            """A keep-alive connection per client thread (urllib3: the client's own CPU stays small next to the
            system's, on the same 2 cores)."""
            return urllib3.connection_from_url(api_url, maxsize=1, retries=False, timeout=60)

        def post(i: int, pool: urllib3.HTTPConnectionPool, record: bool = True) -> None:
            """POST one order; a 503 (admission control) is retried after its Retry-After, until --timeout."""
            deadline = time.monotonic() + args.timeout
            while True:
                started = time.time()
                ok = False
                try:
                    response = pool.urlopen("POST", "/orders", body=json.dumps(_order_payload(i)).encode(),
                                            headers={"Content-Type": "application/json", **c.AUTH})
                    ok = response.status == 202
                    if response.status == 503 and time.monotonic() < deadline and not c.STOP.is_set():
                        with phase.post_lock:
                            rejected[0] += 1
                        time.sleep(min(float(response.headers.get("Retry-After", 1)), 5.0))
                        continue
                except urllib3.exceptions.HTTPError:
                    pass
                break
            if record:
                phase.submitted(i, started, ok)

        # Warm-up: connections, imports and caches in every process; not measured.
        stop = threading.Event()
        c.run_clients(min(args.clients, max(args.warmup, 1)), args.warmup,
                      lambda i, s: post(i, s, record=False), client, stop)
        c.wait_until(lambda: sum(counts(0).get(s, 0) for s in SAGA_TERMINAL) >= sum(counts(0).values()),
                     args.timeout, "the warm-up sagas", 0.2, [*procs, api])
        with db.connect() as conn:
            baseline = conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM sagas")).scalar_one()

        def progress() -> str:
            now = counts(baseline)
            done = sum(now.get(s, 0) for s in SAGA_TERMINAL)
            return (f"ours w={workers}: posted {phase.posted}/{args.orders} (errors {phase.submit_errors}, "
                    f"503 retries {rejected[0]}), "
                    f"sagas {sum(now.values())} created, {done} terminal ({now.get('COMPLETED', 0)} completed)")

        rss_groups = {"api": [api.pid], "workers": [p.pid for p in procs]}
        with c.RssSampler(rss_groups) as rss, c.CpuMeter({**rss_groups, "sandbox": [sandbox.proc.pid]}) as cpu, \
                c.Ticker(progress):
            c.log(f"ours w={workers}: posting {args.orders} orders from {args.clients} clients")
            errors = c.run_clients(args.clients, args.orders, post, client, stop)
            if errors:
                raise RuntimeError(f"a client thread failed: {errors[0]!r}")

            def drained() -> bool:
                now = counts(baseline)
                return sum(now.get(s, 0) for s in SAGA_TERMINAL) >= sum(now.values())

            _drain(drained, args.timeout, "every saga to end", [*procs, api], f"ours w={workers}")
        with db.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT status, created_at, finished_at FROM sagas WHERE id > :a AND kind = 'order'"),
                {"a": baseline}).all()
        completed = [r for r in rows if r.status == "COMPLETED" and r.finished_at is not None]
        latencies = [(r.finished_at - r.created_at).total_seconds() * 1000 for r in completed]
        unfinished = sum(1 for r in rows if r.status not in SAGA_TERMINAL)
        not_completed = sum(1 for r in rows if r.status in SAGA_TERMINAL and r.status != "COMPLETED")
        first = min((r.created_at.timestamp() for r in rows), default=None)
        last = max((r.finished_at.timestamp() for r in completed), default=None)
        from infra.config import Settings

        phase.finish(latencies, first, last, not_completed, unfinished, rss.report(),
                     {"cpu": cpu.report(len(completed)), "saga_statuses": _tally(r.status for r in rows),
                      "sagas_created": len(rows),
                      "post_503_retries": rejected[0], "settings": _settings(Settings.from_env(env))})
    return phase.result


def _settings(settings: Any) -> dict[str, Any]:
    """The stack's settings (infra.config) for the record, without URLs that name throwaway resources."""
    return {k: v for k, v in settings.describe().items() if not k.endswith("_url") and k != "queue"}


def _tally(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


# ------------------------------------------------------------------------------------------------------ bare

def run_bare(args: argparse.Namespace, sandbox: c.Sandbox, workers: int, logs: Path) -> dict[str, Any]:
    phase = Phase("bare", workers, args)
    rid = c.run_id()
    queue, finish_key, fail_key = f"bench-bare-{rid}", f"bench:bare:{rid}:finish", f"bench:bare:{rid}:fail"
    warm_finish, warm_fail = f"{finish_key}:warm", f"{fail_key}:warm"
    with contextlib.ExitStack() as stack:
        stack.callback(_delete_queue_keys, args.bare_redis, queue, finish_key, fail_key, warm_finish, warm_fail)
        env = c.base_env(BARE_BROKER_URL=args.bare_redis, BARE_QUEUE=queue, **sandbox.provider_env())
        procs = c.start_workers(stack, "bench.bare_chain", env, logs, workers, args.concurrency, queue, "bare",
                                beat=False, pool=args.pool)
        from bench import bare_chain

        bare_chain.configure_client(args.bare_redis, queue)
        r = redis.Redis.from_url(args.bare_redis)
        stack.callback(r.close)
        c.log(f"bare w={workers}: {workers} worker process(es) x {args.concurrency}, queue {queue}")

        def order(i: int, fin: str, fail: str) -> dict[str, Any]:
            return {"run": f"bare-{rid}", "order_id": i, "customer_id": 1 + i % 50, "book_id": BOOK_ID, "qty": 1,
                    "amount_cents": BOOK_PRICE_CENTS, "finish_key": fin, "fail_key": fail}

        def publish(i: int, _: object, record: bool = True) -> None:
            started = time.time()
            ok = True
            try:
                if record:
                    bare_chain.order_chain(order(i, finish_key, fail_key)).apply_async()
                else:
                    bare_chain.order_chain(order(-1 - i, warm_finish, warm_fail)).apply_async()
            except Exception:  # noqa: BLE001 - a failed publish is a failure of this order
                ok = False
            if record:
                phase.submitted(i, started, ok)

        stop = threading.Event()
        c.run_clients(min(args.clients, max(args.warmup, 1)), args.warmup,
                      lambda i, s: publish(i, s, record=False), lambda: None, stop)
        c.wait_until(lambda: r.hlen(warm_finish) + r.hlen(warm_fail) >= args.warmup, args.timeout,
                     "the warm-up chains", 0.2, procs)

        def progress() -> str:
            return (f"bare w={workers}: published {phase.posted}/{args.orders} (errors {phase.submit_errors}), "
                    f"finished {r.hlen(finish_key)}, failed {r.hlen(fail_key)}")

        with c.RssSampler({"workers": [p.pid for p in procs]}) as rss, \
                c.CpuMeter({"workers": [p.pid for p in procs], "sandbox": [sandbox.proc.pid]}) as cpu, \
                c.Ticker(progress):
            c.log(f"bare w={workers}: publishing {args.orders} chains from {args.clients} clients")
            errors = c.run_clients(args.clients, args.orders, publish, lambda: None, stop)
            if errors:
                raise RuntimeError(f"a client thread failed: {errors[0]!r}")
            expected = args.orders - phase.submit_errors
            _drain(lambda: r.hlen(finish_key) + r.hlen(fail_key) >= expected, args.timeout, "every chain to end",
                   procs, f"bare w={workers}")
        finishes = {int(k): float(v) for k, v in r.hgetall(finish_key).items()}
        failed = r.hlen(fail_key)
        latencies = [(t - phase.starts[i]) * 1000 for i, t in finishes.items() if phase.starts[i] is not None]
        first = min((t for t in phase.starts if t is not None), default=None)
        last = max(finishes.values(), default=None)
        unfinished = args.orders - phase.submit_errors - len(finishes) - failed
        phase.finish(latencies, first, last, failed, max(unfinished, 0), rss.report(),
                     {"cpu": cpu.report(len(latencies))})
    return phase.result


# ------------------------------------------------------------------------------------------------------ dbos

def run_dbos(args: argparse.Namespace, sandbox: c.Sandbox, workers: int, logs: Path) -> dict[str, Any]:
    try:
        import dbos  # noqa: F401

        from bench import dbos_app
    except Exception as exc:  # noqa: BLE001 - say exactly why it is not measured
        return not_measured("dbos", workers, f"cannot import dbos: {type(exc).__name__}: {exc}")
    phase = Phase("dbos", workers, args)
    rid = c.run_id()
    with contextlib.ExitStack() as stack:
        url = c.create_database(stack, "bm_bench_dbos")
        env = c.base_env(**sandbox.provider_env())
        db = c.engine(stack, url)
        mode = args.dbos_mode
        go_file = logs / f"go-{rid}"
        warm_each = math.ceil(args.warmup / workers)
        procs = []
        shares = _split(args.orders, workers)
        first = 0
        for i in range(workers):
            argv = [sys.executable, "-m", "bench.dbos_app", "worker" if mode == "queue" else "start",
                    "--sysdb", url, "--executor", f"bench-{i + 1}", "--run", f"dbos-{rid}", "--warmup", str(warm_each)]
            if mode == "queue":
                argv += ["--concurrency", str(args.dbos_concurrency), "--poll", str(args.dbos_poll)]
            else:
                argv += ["--first", str(first), "--count", str(shares[i]),
                         "--threads", str(math.ceil(args.clients / workers)), "--go-file", str(go_file)]
                first += shares[i]
            procs.append(c.start_process(stack, f"dbos-{i + 1}", argv, env, logs))
            if i == 0:  # the first one creates the system database's schema; the others must not race it
                c.wait_log(procs[0], "READY", 120)
        for proc in procs:
            c.wait_log(proc, "READY", 120)
        c.log(f"dbos w={workers}: {mode} mode, {workers} DBOS process(es)"
              + (f", worker_concurrency {args.dbos_concurrency}, poll {args.dbos_poll}s" if mode == "queue" else
                 f", {math.ceil(args.clients / workers)} starting threads each"))

        def counts() -> dict[str, int]:
            with db.connect() as conn:
                rows = conn.execute(sa.text("SELECT status, count(*) FROM dbos.workflow_status "
                                            "WHERE workflow_uuid LIKE 'm-%' GROUP BY status")).all()
            return {status: n for status, n in rows}

        client = None
        if mode == "queue":
            from dbos import DBOSClient

            client = DBOSClient(system_database_url=url, application_name=dbos_app.APP_NAME,
                                system_database_pool_size=min(args.clients, 20))
            stack.callback(client.destroy)

        def enqueue(i: int, _: object) -> None:
            started = time.time()
            ok = True
            try:
                client.enqueue({"workflow_name": dbos_app.WORKFLOW, "queue_name": dbos_app.QUEUE,
                                "workflow_id": f"m-{i}"}, dbos_app.make_order(f"dbos-{rid}", i))
            except Exception as exc:  # noqa: BLE001 - a failed enqueue is a failure of this order
                ok = False
                if phase.submit_errors < 3:
                    c.log(f"dbos enqueue failed: {type(exc).__name__}: {exc}")
            phase.submitted(i, started, ok)

        def progress() -> str:
            now = counts()
            done = sum(now.get(s, 0) for s in DBOS_TERMINAL)
            sub = phase.posted if mode == "queue" else sum(now.values())
            return (f"dbos w={workers}: submitted {sub}/{args.orders}, {done} terminal "
                    f"({now.get('SUCCESS', 0)} succeeded)")

        stop = threading.Event()
        with c.RssSampler({"workers": [p.pid for p in procs]}) as rss, \
                c.CpuMeter({"workers": [p.pid for p in procs], "sandbox": [sandbox.proc.pid]}) as cpu, \
                c.Ticker(progress):
            c.log(f"dbos w={workers}: submitting {args.orders} workflows from {args.clients} clients")
            if mode == "queue":
                errors = c.run_clients(args.clients, args.orders, enqueue, lambda: None, stop)
                if errors:
                    raise RuntimeError(f"a client thread failed: {errors[0]!r}")
                expected = args.orders - phase.submit_errors
            else:
                go_file.touch()
                expected = args.orders
            _drain(lambda: sum(counts().get(s, 0) for s in DBOS_TERMINAL) >= expected, args.timeout,
                   "every workflow to end", procs, f"dbos w={workers}")
        with db.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT status, created_at, coalesce(completed_at, updated_at) AS done FROM dbos.workflow_status "
                "WHERE workflow_uuid LIKE 'm-%'")).all()
        ok_rows = [r for r in rows if r.status == "SUCCESS"]
        latencies = [float(r.done - r.created_at) for r in ok_rows]
        first_start = min((r.created_at / 1000 for r in rows), default=None)
        last = max((r.done / 1000 for r in ok_rows), default=None)
        if mode == "start":  # the workflows' own rows tell when each was started
            phase.post_ms = []
        not_completed = sum(1 for r in rows if r.status in DBOS_TERMINAL and r.status != "SUCCESS")
        unfinished = sum(1 for r in rows if r.status not in DBOS_TERMINAL) + max(
            args.orders - phase.submit_errors - len(rows), 0)
        phase.finish(latencies, first_start, last, not_completed, unfinished, rss.report(),
                     {"cpu": cpu.report(len(ok_rows)), "dbos_mode": mode, "dbos_version": _version("dbos"),
                      "workflow_statuses": _tally(r.status for r in rows),
                      **({"dbos_worker_concurrency": args.dbos_concurrency, "dbos_poll_s": args.dbos_poll}
                         if mode == "queue" else {"start_threads_per_process": math.ceil(args.clients / workers)})})
    return phase.result


def _drain(check: Any, timeout: float, what: str, procs: list[c.Proc], label: str) -> None:
    """Wait for a phase's work to end; a timeout is logged, not raised (what did not finish counts as failed)."""
    try:
        c.wait_until(check, timeout, what, 0.2, procs)
    except RuntimeError as exc:
        if "timed out" not in str(exc):
            raise
        c.log(f"{label}: {exc}")


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, with every run's throughput beside it (runs interleave systems, so a
    slow minute of the machine does not land on one system only)."""
    measured = sorted((r for r in runs if r.get("measured")), key=lambda r: r["throughput_per_s"])
    if not measured:
        return runs[-1]
    median = dict(measured[(len(measured) - 1) // 2])
    median["runs_throughput_per_s"] = [round(r["throughput_per_s"], 1) for r in runs if r.get("measured")]
    median["all_runs"] = [{k: v for k, v in r.items() if k != "all_runs"} for r in runs]
    return median


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------------------------ report

RUNNERS = {"ours": run_ours, "bare": run_bare, "dbos": run_dbos}


def ratios(args: argparse.Namespace, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per latency and worker count: ours (at the product's default concurrency) against the bare chain and DBOS,
    each at its default and at its best concurrency in this run, and against ours at latency 0 in this run."""
    out = []
    measured = [r for r in results if r.get("measured")]

    def pick(latency: list[int], system: str, workers: int) -> list[dict[str, Any]]:
        return [r for r in measured if r["latency_ms"] == latency and r["system"] == system and r["workers"] == workers]

    for latency in args.latencies:
        for workers in args.worker_counts:
            ours_all = pick(list(latency), "ours", workers)
            ours = next((r for r in ours_all if r["concurrency"] == args.default_concurrency), None)
            if ours is None:
                continue
            row: dict[str, Any] = {"latency_ms": list(latency), "workers": workers, "ours": ours["label"],
                                   "ours_per_s": ours["throughput_per_s"]}
            zero = next((r for r in pick([0, 0], "ours", workers) if r["concurrency"] == ours["concurrency"]), None)
            row["ours/ours at 0 ms"] = _div(ours["throughput_per_s"], zero["throughput_per_s"]) if zero and \
                latency != (0, 0) else None
            for other, default in (("bare", args.default_concurrency), ("dbos", 16)):
                found = pick(list(latency), other, workers)
                base = next((r for r in found if r["concurrency"] == default), None)
                best = max(found, key=lambda r: r["throughput_per_s"], default=None)
                row[f"ours/{other} default"] = _div(ours["throughput_per_s"], base["throughput_per_s"]) if base \
                    else None
                row[f"{other} default"] = base["label"] if base else None
                row[f"ours/{other} best"] = _div(ours["throughput_per_s"], best["throughput_per_s"]) if best \
                    else None
                row[f"{other} best"] = best["label"] if best else None
                row[f"ours/{other} p50 latency"] = _div(ours["latency"]["p50_ms"], base["latency"]["p50_ms"]) \
                    if base else None
            out.append(row)
    return out


def _div(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) and not math.isnan(a) else math.nan


def report(args: argparse.Namespace, results: list[dict[str, Any]], env: dict[str, Any]) -> None:
    headers = ["latency ms", "system", "W x conc", "orders", "completed", "failures", "sagas/s", "p50 ms", "p95 ms",
               "p99 ms", "submit p50 ms", "submit p99 ms", "503 retries", "API peak MB", "workers peak MB",
               "peak MB/proc", "runs sagas/s"]
    rows = []
    for r in results:
        lat = "-".join(str(x) for x in sorted(set(r["latency_ms"])))
        if not r.get("measured"):
            rows.append([lat, r["system"], f"{r['workers']} x {r.get('concurrency', '-')}", args.orders,
                         "NOT MEASURED", *[None] * 12])
            continue
        mem = r["memory"]
        rows.append([lat, r["system"] + (f" ({r['dbos_mode']})" if r["system"] == "dbos" else ""),
                     r["label"], r["orders"], r["completed"], r["failures"],
                     r["throughput_per_s"], r["latency"]["p50_ms"], r["latency"]["p95_ms"], r["latency"]["p99_ms"],
                     r["submit"]["p50_ms"], r["submit"]["p99_ms"], r.get("post_503_retries"),
                     mem.get("api", {}).get("peak_rss_mb"),
                     mem.get("workers", {}).get("peak_rss_mb"),
                     mem.get("workers", {}).get("peak_single_process_rss_mb"),
                     " / ".join(str(x) for x in r.get("runs_throughput_per_s", []))])
    c.print_table(f"saga throughput: {args.orders} orders, {args.clients} clients, Celery {args.pool} pool",
                  headers, rows)
    for r in results:
        if not r.get("measured"):
            print(f"  {r['system']} w={r['workers']}: not measured: {r['reason']}")
    _cpu_table(results)
    rat = ratios(args, results)
    if rat:
        c.print_table("ratios of throughput (ours at its default concurrency / the other; < 1: ours is slower)",
                      ["latency ms", "W", "ours", "/ours at 0 ms", "/bare default", "/bare best", "bare best",
                       "/dbos 16 wf", "/dbos best", "dbos best", "p50 / dbos 16 wf"],
                      [["-".join(str(x) for x in sorted(set(x["latency_ms"]))), x["workers"], x["ours"],
                        x["ours/ours at 0 ms"], x["ours/bare default"], x["ours/bare best"], x["bare best"],
                        x["ours/dbos default"], x["ours/dbos best"], x["dbos best"], x["ours/dbos p50 latency"]]
                       for x in rat], digits=2)
    command = c.command_line()
    payload = {"benchmark": "saga_throughput", "command": command,
               "params": {k: v for k, v in vars(args).items() if k not in ("worker_counts", "system_list")},
               "environment": env, "results": results, "ratios": rat,
               "notes": ["latency: ours = sagas.finished_at - sagas.created_at; bare = finish time written by the "
                         "last task - client time before publishing; dbos = completed_at - created_at",
                         "throughput = completed / (last finish - first start)",
                         "with --repeat N: each row is the run with the median throughput; every run is under "
                         "all_runs, and the runs interleave systems",
                         "peak RSS sums every process of a tree (shared pages counted in each process); "
                         "peak MB/proc is the largest single process",
                         "the client threads run on the same 2-core machine as the system under test"]}
    json_path = c.write_json(args.name, payload)
    png_path = _chart(args, results, command)
    print(f"results: {json_path.relative_to(c.ROOT)}  chart: {png_path.relative_to(c.ROOT)}")
    print(f"command: {command}", flush=True)


CPU_GROUPS = ("client", "api", "workers", "sandbox", "postgres", "redis", "other")


def _cpu_table(results: list[dict[str, Any]]) -> None:
    """Where each completed saga's CPU went, by process group, and how busy the machine's cores were."""
    rows = []
    for r in results:
        cpu = r.get("cpu") if r.get("measured") else None
        if not cpu:
            continue
        per = cpu["cpu_ms_per_saga"]
        rows.append(["-".join(str(x) for x in sorted(set(r["latency_ms"]))), r["system"], r["label"],
                     *[per.get(g) for g in CPU_GROUPS], cpu["cpu_ms_per_saga_total"],
                     f"{cpu['busy_cores']}/{cpu['cores']}"])
    if rows:
        c.print_table("CPU ms per completed saga, by process group (client = this script's client threads; "
                      "other = the rest of the machine)", ["latency ms", "system", "W x conc", *CPU_GROUPS, "total",
                                                            "busy cores"], rows, digits=2)


def _chart(args: argparse.Namespace, results: list[dict[str, Any]], command: str) -> Path:
    """Throughput, p50 and p99 latency and worker memory, grouped by latency and worker count, a bar per variant."""
    groups = [(lat, w) for lat in args.latencies for w in args.worker_counts]
    names = [f"{lat[0]}-{lat[1]} ms, {w} proc" for lat, w in groups]
    series_keys = sorted({(r["system"], r["concurrency"]) for r in results},
                         key=lambda k: (args.system_list.index(k[0]), k[1]))
    by = {(tuple(r["latency_ms"]), r["workers"], r["system"], r["concurrency"]): r for r in results}

    def series(get: Any) -> dict[str, list[float]]:
        out = {}
        for system, conc in series_keys:
            vals = []
            for lat, w in groups:
                r = by.get((lat, w, system, conc))
                vals.append(get(r) if r and r.get("measured") else math.nan)
            out[f"{system} x{conc}"] = vals
        return out

    fig, axes = c.new_figure(2, 2)
    c.grouped_bars(axes[0], names, series(lambda r: r["throughput_per_s"]), "completed per second",
                   "throughput (higher is better)")
    c.grouped_bars(axes[1], names, series(lambda r: r["latency"]["p50_ms"]), "ms", "latency p50, start -> end")
    c.grouped_bars(axes[2], names, series(lambda r: r["latency"]["p99_ms"]), "ms", "latency p99, start -> end")
    c.grouped_bars(axes[3], names, series(lambda r: r["memory"]["workers"]["peak_single_process_rss_mb"]), "MB",
                   "peak RSS of one worker process")
    fig.suptitle(f"{args.orders} orders, {args.clients} clients, Celery {args.pool} pool")
    return c.save_png(args.name, fig, command)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body(stack: contextlib.ExitStack) -> int:
        env = c.environment()
        c.log(f"saga throughput: {args.orders} orders, {args.clients} clients, workers {args.worker_counts}, "
              f"systems {args.system_list} (load average {env['load_avg_at_start']})")
        logs = c.log_dir(stack, "saga", args.keep_logs)
        sandbox = c.start_sandbox(stack, logs)
        runs: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for repeat in range(args.repeat):
            for latency in args.latencies:
                for workers in args.worker_counts:
                    for system in args.system_list:
                        for variant in variants(args, system):
                            variant.latency = latency
                            sandbox.reset(latency)
                            c.log(f"--- {system}, {workers} worker process(es), latency {latency[0]}-{latency[1]} "
                                  f"ms, run {repeat + 1} of {args.repeat}")
                            try:
                                result = RUNNERS[system](variant, sandbox, workers, logs)
                            except Exception as exc:
                                if system == "ours":
                                    raise
                                result = not_measured(system, workers, f"{type(exc).__name__}: {exc}")
                            result["latency_ms"] = list(latency)
                            result.setdefault("concurrency", variant.dbos_concurrency if system == "dbos"
                                              else variant.concurrency)
                            runs.setdefault((latency, system, workers, result["concurrency"]), []).append(result)
                            if result.get("measured"):
                                c.log(f"{system} w={workers}: {result['completed']}/{args.orders} completed, "
                                      f"{result['throughput_per_s']:.1f}/s, p50 {result['latency']['p50_ms']:.0f} ms")
        results = [_median_run(found) for found in runs.values()]
        report(args, results, env)
        return 0 if all(r.get("measured") and r["failures"] == 0 for r in results if r["system"] == "ours") else 1

    return c.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
