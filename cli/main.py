"""`bookmarket`: run the whole stack (`up`) or one piece of it (`api`, `worker`, `beat`, `flower`, `sandbox`,
`migrate`); `config` prints the settings; `retention run` moves old finished sagas out now; `history fill` adds a
history of finished orders (PostgreSQL)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cli import history as history_cli
from cli import retention as retention_cli
from cli import sagas as sagas_cli
from cli.embedded import EmbeddedRedis
from cli.ports import port_problem
from cli.supervisor import Supervisor
from cli.tokens import load_or_make, read, tokens_file
from infra.broker import broker_url
from infra.config import Settings
from infra.db import sqlite_url_for
from infra.metrics import MULTIPROC_DIR
from infra.migrate import upgrade
from infra.tokens import Tokens

# Saga steps one worker process runs at once. A step spends nearly all its time waiting on a provider (hundreds of
# milliseconds) and holds no database connection meanwhile, so one process on Celery's thread pool keeps this
# many calls in flight for a few megabytes of stacks; the GIL is free while they wait.
WORKER_THREADS = 192
HEARTBEAT_MISSES = 4  # `worker-alive` fails once this many heartbeats in a row were missed


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bookmarket", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run everything on one machine (embedded Redis and SQLite unless configured)")
    up.add_argument("--port", type=int, default=_env_int("BOOKMARKET_PORT", 8080), help="API port (8080)")
    up.add_argument("--sandbox-port", type=int, default=_env_int("BOOKMARKET_SANDBOX_PORT", 8090),
                    help="sandbox providers port (8090)")
    up.add_argument("--data-dir", default=os.environ.get("BOOKMARKET_DATA_DIR", "./var"),
                    help="where the SQLite file, the embedded Redis and the sandbox's ledgers live (./var)")
    up.add_argument("--workers", type=int, default=_env_int("BOOKMARKET_WORKERS", 2),
                    help="Celery worker processes (2: one per core; each runs saga steps on its own threads)")
    up.add_argument("--threads", type=int, default=_env_int("BOOKMARKET_WORKER_THREADS", WORKER_THREADS),
                    help=f"saga steps each worker process runs at once ({WORKER_THREADS})")
    up.add_argument("--flower-port", type=int, default=_env_int("BOOKMARKET_FLOWER_PORT", 5555),
                    help="Flower monitoring port (5555); 0 disables it")
    api = sub.add_parser("api", help="the HTTP API under gunicorn")
    api.add_argument("--port", type=int, default=_env_int("BOOKMARKET_PORT", 8080))
    api.add_argument("--bind", default=os.environ.get("BOOKMARKET_BIND", "127.0.0.1"))
    api.add_argument("--data-dir", default=os.environ.get("BOOKMARKET_DATA_DIR", "./var"),
                     help="without BOOKMARKET_TOKENS, the API takes the tokens `bookmarket up` keeps here (./var)")
    worker = sub.add_parser("worker", help="a Celery worker running saga steps")
    worker.add_argument("--threads", type=int, default=_env_int("BOOKMARKET_WORKER_THREADS", WORKER_THREADS),
                        help=f"saga steps this process runs at once, each on a thread ({WORKER_THREADS})")
    worker.add_argument("--queues", default=None, help="comma-separated queues this process consumes (WORKER_QUEUES; "
                        "unset: SAGA_QUEUE and every STEP_QUEUES queue)")
    worker.add_argument("--beat", action="store_true", help="also run the sweeper schedule in this worker")
    flower_cmd = sub.add_parser("flower", help="Flower: the saga steps' tasks, searchable by saga, order and step")
    flower_cmd.add_argument("--port", type=int, default=_env_int("BOOKMARKET_FLOWER_PORT", 5555))
    flower_cmd.add_argument("--bind", default=os.environ.get("BOOKMARKET_BIND", "127.0.0.1"))
    sub.add_parser("beat", help="optional: Celery beat scheduling saga.sweep (every worker already sweeps)")
    sandbox = sub.add_parser("sandbox", help="the sandbox payment, delivery and messaging providers")
    sandbox.add_argument("--port", type=int, default=_env_int("BOOKMARKET_SANDBOX_PORT", 8090))
    sandbox.add_argument("--bind", default=os.environ.get("BOOKMARKET_BIND", "127.0.0.1"))
    sub.add_parser("migrate", help="bring the database schema up to date and seed the catalog")
    sub.add_parser("config", help="print the settings the environment gives, as JSON (passwords masked)")
    alive = sub.add_parser("worker-alive", help="exit 0 if this machine's worker touched its heartbeat file "
                                                "(WORKER_HEARTBEAT_FILE) lately, 1 otherwise: a liveness probe")
    alive.add_argument("--max-age", type=float, default=None,
                       help="seconds the heartbeat may be old (4 x WORKER_HEARTBEAT_S: 20)")
    sagas_cli.add_parser(sub)
    retention_cli.add_parser(sub)
    history_cli.add_parser(sub)
    return p


def gunicorn(bind: str, port: int, app: str, workers: int, threads: int, graceful_s: float,
             *options: str) -> list[str]:
    """gunicorn with threaded workers and no control socket (gunicorn 25+ makes one in $HOME/.gunicorn, shared by
    every gunicorn of the user; nothing here uses gunicornc)."""
    return [sys.executable, "-m", "gunicorn", "--bind", f"{bind}:{port}", "--workers", str(workers),
            "--worker-class", "gthread", "--threads", str(threads), "--graceful-timeout", f"{graceful_s:g}",
            "--no-control-socket", *options, app]


def gunicorn_api(bind: str, port: int, workers: int = 2, threads: int = 16) -> list[str]:
    """The API under gunicorn, whose settings file forgets the metrics of an API process that exits, with access
    lines written by our logger class (JSON, no headers or query strings)."""
    return gunicorn(bind, port, "api.wsgi:app", workers, threads, 10, "--timeout", "60", "--access-logfile", "-",
                    "--config", "python:api.gunicorn_conf", "--logger-class", "api.access_log.Logger")


def gunicorn_sandbox(bind: str, port: int, graceful_s: float = 2) -> list[str]:
    """The sandbox in one process (it alone holds its ledgers and writes their journal); 1024 threads, so calls held
    by a slow-provider latency do not queue behind each other when two or more workers of 192 threads call it (a
    real provider does not cap its callers' concurrency at a few hundred either)."""
    return gunicorn(bind, port, "sandbox.wsgi:app", 1, 1024, graceful_s, "--worker-connections", "4096")


def celery_worker(threads: int, queue: str, beat_schedule: str | None = None,
                  hostname: str | None = None) -> list[str]:
    """One Celery worker process running `threads` saga steps at once on Celery's thread pool, consuming `queue`
    (several comma-separated)."""
    # --quiet: no banner on stdout, so every line the worker writes is a log line (in LOG_FORMAT)
    argv = [sys.executable, "-m", "celery", "-A", "workers.main", "--quiet", "worker", "--loglevel", "INFO",
            "--pool", "threads", "--concurrency", str(threads), "--queues", queue, "--without-mingle",
            "--without-gossip"]
    if hostname:
        argv += ["--hostname", hostname]
    if beat_schedule:
        argv += ["--beat", "--schedule", beat_schedule]
    return argv


def flower(port: int, address: str = "127.0.0.1") -> list[str]:
    """Flower on the workers' broker. Its --basic-auth comes from FLOWER_BASIC_AUTH, which Flower reads from the
    environment itself: the password never shows on a command line (ps) or in our output."""
    return [sys.executable, "-m", "celery", "-A", "workers.main", "flower", f"--port={port}", f"--address={address}",
            "--purge_offline_workers=60"]


def celery_beat(schedule: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.main", "beat", "--loglevel", "INFO",
            "--schedule", schedule]


def up(args: argparse.Namespace) -> int:
    """Start every process with embedded defaults for what is not configured; stop them all on a signal."""
    run_sandbox = not all(k in os.environ for k in ("PAYMENT_URL", "DELIVERY_URL", "MESSAGING_URL"))
    problem = port_problem(_listening_ports(args, run_sandbox))
    if problem:  # before anything starts or migrates: gunicorn would fail late, its cause lost in a traceback
        print(f"bookmarket: {problem}", file=sys.stderr, flush=True)
        return 2
    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(data), PYTHONUNBUFFERED="1")
    env.setdefault("FLOWER_UNAUTHENTICATED_API", "true")  # local monitoring on loopback only
    env.setdefault("LOG_FORMAT", "text" if sys.stdout.isatty() else "json")  # a person reading a terminal: text
    if args.flower_port:
        env.setdefault("FLOWER_URL", f"http://127.0.0.1:{args.flower_port}")  # the support timeline links to it
    env.setdefault("DATABASE_URL", sqlite_url_for(data))
    sandbox_url = f"http://127.0.0.1:{args.sandbox_port}"
    env.setdefault("SANDBOX_URL", sandbox_url)
    env.setdefault("SANDBOX_DATA_DIR", str(data))  # the sandbox remembers its charges and shipments across restarts
    env[MULTIPROC_DIR] = metrics_folder(data / "metrics")
    try:
        tokens = _tokens_for_up(data, env)
    except ValueError as exc:  # a token file edited wrong
        print(f"bookmarket: {exc}", file=sys.stderr, flush=True)
        return 2
    redis = None if "REDIS_URL" in os.environ else EmbeddedRedis(data)
    if redis is not None:
        env["REDIS_URL"] = redis.url
    os.environ.update(env)
    print(f"bookmarket: migrating {env['DATABASE_URL']}", flush=True)
    upgrade(env["DATABASE_URL"], prepared_statements=Settings.from_env().database_prepared_statements)
    supervisor = Supervisor(env)
    code = 1
    try:
        code = _start_all(supervisor, args, run_sandbox, tokens)
        if code == 0:
            code = supervisor.run_until_signal()
    finally:
        print("bookmarket: stopping", flush=True)
        supervisor.stop()
        if redis is not None:
            redis.shutdown()
    print("bookmarket: stopped", flush=True)
    return code


def metrics_folder(path: Path) -> str:
    """An empty folder for the metrics of the processes `up` starts (prometheus_client's multiprocess mode): the
    API's /metrics sums the counters of its gunicorn processes and of the workers; emptied at every start."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def _listening_ports(args: argparse.Namespace, run_sandbox: bool) -> list[tuple[int, str]]:
    """The ports `up` will listen on, each with the option that sets it."""
    ports = [(args.port, "--port")]
    if run_sandbox:
        ports.append((args.sandbox_port, "--sandbox-port"))
    if args.flower_port:
        ports.append((args.flower_port, "--flower-port"))
    return ports


def _tokens_for_up(data: Path, env: dict[str, str]) -> str:
    """Without BOOKMARKET_TOKENS, the tokens kept in the data folder (made there the first time) go to the processes
    `up` starts, in their sha256 form; what to print about the tokens."""
    if env.get("BOOKMARKET_TOKENS", "").strip():
        return "from BOOKMARKET_TOKENS"
    path = tokens_file(data)
    entries, tokens = load_or_make(path)
    env["BOOKMARKET_TOKENS"] = tokens.hashed()
    shown = "\n             ".join(entries)
    return f"{shown}\n             (curl -H 'Authorization: Bearer <token>'; kept in {path})"


def _start_all(supervisor: Supervisor, args: argparse.Namespace, run_sandbox: bool, tokens: str) -> int:
    settings = Settings.from_env()
    if run_sandbox:
        supervisor.start("sandbox", gunicorn_sandbox("127.0.0.1", args.sandbox_port))
        supervisor.wait_http("sandbox", f"http://127.0.0.1:{args.sandbox_port}/health")
    for i in range(1, args.workers + 1):
        supervisor.start(f"worker{i}", celery_worker(args.threads, ",".join(settings.all_queues()),
                                                     hostname=f"worker{i}@%h"),
                         restart=True)
    supervisor.start("api", gunicorn_api("127.0.0.1", args.port))
    if args.flower_port:
        supervisor.start("flower", flower(args.flower_port))
    supervisor.wait_http("api", f"http://127.0.0.1:{args.port}/health")
    print(
        "bookmarket: up\n"
        f"  API        http://127.0.0.1:{args.port}   (docs /docs, OpenAPI /openapi.json)\n"
        f"  sandbox    {os.environ.get('SANDBOX_URL') if run_sandbox else 'external providers'}\n"
        f"  database   {settings.database_url}\n"
        f"  broker     {_mask_password(broker_url(settings))}\n"
        f"  workers    {args.workers} Celery worker process(es) x {args.threads} threads, "
        f"sweeper every {settings.sweep_interval_s:g}s\n"
        f"  flower     {_flower_line(args.flower_port, settings)}\n"
        f"  tokens     {tokens}\n"
        "  Ctrl-C stops everything.",
        flush=True,
    )
    return 0


def _flower_line(port: int, settings: Settings) -> str:
    if not port:
        return "off"
    return f"http://127.0.0.1:{port}" + ("   (basic auth: FLOWER_BASIC_AUTH)" if settings.flower_basic_auth else "")


def config_json(settings: Settings) -> str:
    """The settings as JSON, with the password of every URL masked and the API tokens as their roles and names."""
    described = settings.describe()
    return json.dumps({name: _masked(name, value) for name, value in described.items()}, indent=2)


def _masked(name: str, value: object) -> object:
    if isinstance(value, Tokens):
        return value.describe()
    if name == "flower_basic_auth" and isinstance(value, str):  # user names only: the passwords are never printed
        return ",".join(f"{entry.partition(':')[0]}:***" for entry in value.split(",") if entry)
    return _mask_password(value) if name.endswith("_url") else value


def _mask_password(url: object) -> object:
    """`scheme://user:***@host/...` for a URL with a password; anything else unchanged."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _api(args: argparse.Namespace) -> int:
    try:
        tokens = _tokens_for_api(Path(args.data_dir))
    except ValueError as exc:
        print(f"bookmarket: {exc}", file=sys.stderr, flush=True)
        return 2
    if tokens is None:
        print(f"bookmarket: BOOKMARKET_TOKENS is not set and {tokens_file(Path(args.data_dir))} does not exist: set "
              "BOOKMARKET_TOKENS (role=token entries, see the README) or run `bookmarket up` once to make tokens "
              "there", file=sys.stderr, flush=True)
        return 2
    os.environ["BOOKMARKET_TOKENS"] = tokens
    if not os.environ.get(MULTIPROC_DIR):  # the API's gunicorn processes share their metrics through a folder
        os.environ[MULTIPROC_DIR] = tempfile.mkdtemp(prefix="bookmarket-metrics-")
    return _exec(gunicorn_api(args.bind, args.port))


def _exec(argv: list[str]) -> int:
    os.execv(argv[0], argv)
    return 0  # pragma: no cover - execv does not return


def _tokens_for_api(data_dir: Path) -> str | None:
    """BOOKMARKET_TOKENS for `bookmarket api`: the setting, else the sha256 form of the tokens `up` made in the data
    folder; None if there are neither."""
    configured = os.environ.get("BOOKMARKET_TOKENS", "").strip()
    path = tokens_file(data_dir)
    if configured or not path.exists():
        return configured or None
    return read(path)[1].hashed()


def worker_alive(settings: Settings, max_age_s: float | None) -> int:
    """0 when the heartbeat file is fresher than `max_age_s`, else 1 with a line saying why."""
    limit = max_age_s if max_age_s is not None else HEARTBEAT_MISSES * settings.worker_heartbeat_s
    path = Path(settings.worker_heartbeat_file)
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        print(f"bookmarket: no worker heartbeat: {path} does not exist (the worker is not running, not ready yet, "
              "or stopped)", file=sys.stderr, flush=True)
        return 1
    if age > limit:
        print(f"bookmarket: worker heartbeat {path} is {age:.1f}s old (more than {limit:g}s)", file=sys.stderr,
              flush=True)
        return 1
    print(f"worker alive: heartbeat {age:.1f}s old")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a malformed setting: one line, not a traceback
        print(f"bookmarket: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.command == "up":
        return up(args)
    if args.command == "sagas":
        return sagas_cli.run(args)
    if args.command == "retention":
        return retention_cli.run(args, settings)
    if args.command == "history":
        return history_cli.run(args, settings.database_url)
    if args.command == "config":
        print(config_json(settings))
        return 0
    if args.command == "worker-alive":
        return worker_alive(settings, args.max_age)
    if args.command == "migrate":
        upgrade(settings.database_url, prepared_statements=settings.database_prepared_statements)
        print(f"schema up to date: {settings.database_url}")
        return 0
    if args.command == "api":
        return _api(args)
    if args.command == "worker":
        schedule = str(Path(os.environ.get("BOOKMARKET_DATA_DIR", ".")) / "beat-schedule") if args.beat else None
        queues = args.queues or ",".join(settings.consumed_queues())
        return _exec(celery_worker(args.threads, queues, schedule))
    if args.command == "flower":
        return _exec(flower(args.port, args.bind))
    if args.command == "beat":
        return _exec(celery_beat(str(Path(os.environ.get("BOOKMARKET_DATA_DIR", ".")) / "beat-schedule")))
    return _exec(gunicorn_sandbox(args.bind, args.port))


if __name__ == "__main__":
    sys.exit(main())
