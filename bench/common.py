"""Shared pieces of the benchmarks: starting the stack's processes, cleanup, sampling memory, percentiles,
tables and the JSON/PNG output in bench/results/.

Every process a benchmark starts runs in its own process group and is registered on a `contextlib.ExitStack`,
as is every database it creates, so Ctrl-C, SIGTERM or an error stops and drops them all (`run_main`).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ on the path, not the project
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL") or os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL") or os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# The API token of this run: every stack the benchmarks start takes it (BOOKMARKET_TOKENS, via base_env), every
# client sends it (AUTH; wrk reads BOOKMARKET_TOKEN).
TOKEN = secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
_T0 = time.monotonic()


# --------------------------------------------------------------------------------------------------- running

def log(message: str) -> None:
    """A progress line, stamped with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", flush=True)


# Set by Ctrl-C, SIGTERM or SIGHUP. The handler also raises KeyboardInterrupt, but library code on the main
# thread's path may catch and drop it, so every waiting loop here checks this flag as well (`check_stop`).
STOP = threading.Event()


def _on_signal(signum: int, _frame: object) -> None:
    STOP.set()
    raise KeyboardInterrupt(f"signal {signum}")


def check_stop() -> None:
    if STOP.is_set():
        raise KeyboardInterrupt("stop requested")


def run_main(body: Callable[[contextlib.ExitStack], int]) -> int:
    """Run `body` with an ExitStack that is unwound (processes stopped, databases dropped) whatever happens:
    normal end, an error, Ctrl-C, SIGTERM or SIGHUP."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT too when started ignored (`cmd &`)
        signal.signal(signum, _on_signal)
    code = 1
    with contextlib.ExitStack() as stack:
        try:
            code = body(stack)
        except KeyboardInterrupt:
            log("interrupted: cleaning up")
            code = 130
        finally:
            # A second Ctrl-C during cleanup must not leave processes behind: ignore it while we unwind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log("cleaned up")
    return code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_id() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class Proc:
    """A child process in its own process group, its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the group, SIGKILL it after `timeout` seconds."""
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.popen.pid, signal.SIGKILL)  # children the leader left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with code {self.popen.returncode}; its log "
                               f"({self.log_path}) ends:\n{self.tail()}")


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def start_process(stack: contextlib.ExitStack, name: str, argv: Sequence[str], env: dict[str, str],
                  log_dir: Path) -> Proc:
    """Start `argv` in its own session (Ctrl-C in the terminal reaches only us) and register its stop."""
    log_path = log_dir / f"{name}.log"
    handle = log_path.open("wb")
    popen = subprocess.Popen(list(argv), env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=str(ROOT))
    handle.close()
    proc = Proc(name, popen, log_path)
    stack.callback(proc.stop)
    return proc


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1,
               procs: Iterable[Proc] = ()) -> Any:
    deadline = time.monotonic() + timeout
    procs = list(procs)
    while time.monotonic() < deadline:
        check_stop()
        for proc in procs:
            proc.check()
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")


def wait_http(url: str, proc: Proc, timeout: float = 60) -> None:
    def ready() -> bool:
        try:
            return requests.get(url, timeout=2).status_code < 500
        except requests.RequestException:
            return False

    wait_until(ready, timeout, f"{url} to answer", 0.2, [proc])


def wait_log(proc: Proc, text: str, timeout: float = 90) -> None:
    wait_until(lambda: text in proc.log_path.read_text(errors="replace"), timeout,
               f"{proc.name} to log {text!r}", 0.1, [proc])


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        BOOKMARKET_TOKENS=f"storefront:bench={TOKEN}", BOOKMARKET_TOKEN=TOKEN)
    env.update(extra)
    return env


def api_session() -> requests.Session:
    """A keep-alive session to the API sending the run's token."""
    session = requests.Session()
    session.headers.update(AUTH)
    return session


# --------------------------------------------------------------------------------------------------- databases

def sa_url(url: str) -> str:
    """A plain postgresql:// URL for SQLAlchemy with psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def create_database(stack: contextlib.ExitStack, prefix: str = "bm_bench") -> str:
    """A fresh PostgreSQL database (dropped, WITH (FORCE), when the stack unwinds); its plain URL."""
    name = f"{prefix}_{run_id()}"
    admin = sa.create_engine(sa_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception as exc:  # noqa: BLE001 - report and go on cleaning the rest
            print(f"warning: could not drop database {name}: {exc}", file=sys.stderr, flush=True)
        admin.dispose()

    stack.callback(drop)
    return sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def engine(stack: contextlib.ExitStack, url: str) -> sa.Engine:
    """A small engine for the benchmark's own reads, disposed before its database is dropped."""
    eng = sa.create_engine(sa_url(url), pool_size=2, max_overflow=2)
    stack.callback(eng.dispose)
    return eng


# --------------------------------------------------------------------------------------------------- the stack

class Sandbox:
    """The sandbox providers under gunicorn, as `bookmarket up` runs them."""

    def __init__(self, proc: Proc, url: str) -> None:
        self.proc = proc
        self.url = url

    def reset(self, latency_ms: tuple[int, int] = (0, 0)) -> None:
        """Default behaviours, this latency, and empty ledgers: each run has a fresh database whose saga ids (the
        providers' idempotency keys) start again at 1."""
        requests.post(f"{self.url}/reset?ledgers=true", timeout=10).raise_for_status()
        for provider in ("payment", "delivery", "messaging"):
            requests.put(f"{self.url}/{provider}/behavior", json={"latency_ms": list(latency_ms)},
                         timeout=10).raise_for_status()

    def provider_env(self) -> dict[str, str]:
        return {"SANDBOX_URL": self.url, "PAYMENT_URL": f"{self.url}/payment",
                "DELIVERY_URL": f"{self.url}/delivery", "MESSAGING_URL": f"{self.url}/messaging"}


def start_sandbox(stack: contextlib.ExitStack, log_dir: Path, data_dir: Path | None = None,
                  name: str = "sandbox") -> Sandbox:
    """The sandbox with its ledgers in `data_dir` (SANDBOX_DATA_DIR), or in memory only."""
    from cli.main import gunicorn_sandbox

    port = free_port()
    env = {k: v for k, v in base_env().items() if k != "SANDBOX_DATA_DIR"}
    if data_dir is not None:
        env["SANDBOX_DATA_DIR"] = str(data_dir)
    proc = start_process(stack, name, gunicorn_sandbox("127.0.0.1", port), env, log_dir)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", proc)
    return Sandbox(proc, url)


def start_api(stack: contextlib.ExitStack, env: dict[str, str], log_dir: Path, workers: int = 2,
              name: str = "api") -> tuple[Proc, str]:
    """The API under gunicorn with the argv of `bookmarket api` / `bookmarket up`."""
    from cli.main import gunicorn_api

    port = free_port()
    proc = start_process(stack, name, gunicorn_api("127.0.0.1", port, workers), env, log_dir)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", proc)
    return proc, url


def celery_worker_argv(app_module: str, concurrency: int, queue: str, hostname: str,
                       beat_schedule: Path | None = None, pool: str = "threads") -> list[str]:
    """`bookmarket worker`'s Celery argv (cli.main.celery_worker), on `app_module`, with a hostname; `pool`
    replaces the product's thread pool (prefork: `concurrency` child processes)."""
    from cli.main import celery_worker

    argv = celery_worker(concurrency, queue, str(beat_schedule) if beat_schedule else None, f"{hostname}@%h")
    argv[argv.index("workers.main")] = app_module
    argv[argv.index("--pool") + 1] = pool
    return argv


def start_workers(stack: contextlib.ExitStack, app_module: str, env: dict[str, str], log_dir: Path, count: int,
                  concurrency: int, queue: str, prefix: str, beat: bool, pool: str = "threads") -> list[Proc]:
    """`count` Celery worker processes (`concurrency` threads, or prefork children, each); the sweeper beat in the
    first."""
    procs = []
    for i in range(count):
        schedule = log_dir / f"{prefix}-beat-schedule" if beat and i == 0 else None
        argv = celery_worker_argv(app_module, concurrency, queue, f"{prefix}{i + 1}-{run_id()}", schedule, pool)
        procs.append(start_process(stack, f"{prefix}-worker{i + 1}", argv, env, log_dir))
    for proc in procs:
        wait_log(proc, "ready.")
    return procs


# --------------------------------------------------------------------------------------------------- sampling

class RssSampler:
    """Samples the resident memory of process trees every `interval` seconds in a thread; keeps the peaks.

    A group's RSS is the sum over its processes (each root and all its descendants: gunicorn's master and
    workers, Celery's parent and prefork children). Shared pages are counted once per process, so a prefork
    tree's sum overstates the physical memory it uses; that is the usual reading of `ps`/`top` too."""

    def __init__(self, groups: dict[str, list[int]], interval: float = 0.2) -> None:
        import psutil

        self._psutil = psutil
        self.groups = groups
        self.interval = interval
        self.peak_mb: dict[str, float] = {g: 0.0 for g in groups}
        self.peak_process_mb: dict[str, float] = {g: 0.0 for g in groups}
        self.max_processes: dict[str, int] = {g: 0 for g in groups}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _tree(self, pid: int) -> list[Any]:
        try:
            root = self._psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except self._psutil.Error:
            return []

    def sample(self) -> None:
        for group, pids in self.groups.items():
            total = 0
            count = 0
            for pid in pids:
                for proc in self._tree(pid):
                    try:
                        rss = proc.memory_info().rss
                    except self._psutil.Error:
                        continue
                    total += rss
                    count += 1
                    self.peak_process_mb[group] = max(self.peak_process_mb[group], rss / 2**20)
            self.peak_mb[group] = max(self.peak_mb[group], total / 2**20)
            self.max_processes[group] = max(self.max_processes[group], count)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def report(self) -> dict[str, dict[str, float]]:
        return {g: {"peak_rss_mb": round(self.peak_mb[g], 1),
                    "peak_single_process_rss_mb": round(self.peak_process_mb[g], 1),
                    "processes": self.max_processes[g]} for g in self.groups}


class CpuMeter:
    """CPU time (user + system) spent by each process group between __enter__ and __exit__, and by the machine.

    Groups are process trees (as RssSampler) plus processes found by name (`named`: postgres, redis-server), the
    benchmark process itself ("client": its client threads) and "other" (the machine's busy time not in any
    group). Divided by the sagas completed, this says where each saga's CPU goes: on a machine whose cores are
    all busy, throughput is (cores x 1000) / (CPU ms per saga)."""

    def __init__(self, groups: dict[str, list[int]], named: dict[str, str] | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.groups = groups
        self.named = named if named is not None else {"postgres": "postgres", "redis": "redis-server"}
        self._start: dict[str, dict[int, float]] = {}
        self._end: dict[str, dict[int, float]] = {}
        self._machine: list[Any] = []
        self.wall_s = 0.0
        self._t0 = 0.0

    def _procs(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for group, pids in self.groups.items():
            procs = []
            for pid in pids:
                try:
                    root = self._psutil.Process(pid)
                    procs += [root, *root.children(recursive=True)]
                except self._psutil.Error:
                    continue
            out[group] = procs
        for group, name in self.named.items():
            out[group] = [p for p in self._psutil.process_iter(["name"]) if (p.info["name"] or "").startswith(name)]
        out["client"] = [self._psutil.Process()]
        return out

    def _read(self) -> dict[str, dict[int, float]]:
        reading: dict[str, dict[int, float]] = {}
        for group, procs in self._procs().items():
            times: dict[int, float] = {}
            for proc in procs:
                try:
                    t = proc.cpu_times()
                    times[proc.pid] = t.user + t.system
                except self._psutil.Error:
                    continue
            reading[group] = times
        return reading

    def __enter__(self) -> CpuMeter:
        self._start = self._read()
        self._machine = [self._psutil.cpu_times()]
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self._end = self._read()
        self._machine.append(self._psutil.cpu_times())
        self.wall_s = time.monotonic() - self._t0

    def report(self, units: int) -> dict[str, Any]:
        """CPU seconds per group, CPU ms per unit (a completed saga) and the machine's average busy cores."""
        seconds: dict[str, float] = {}
        for group, end in self._end.items():
            start = self._start.get(group, {})
            seconds[group] = sum(t - start.get(pid, 0.0) for pid, t in end.items())
        before, after = self._machine
        def busy_s(t: Any) -> float:  # niced processes' time is not in `user` on Linux
            return float(t.user + t.system + sum(getattr(t, f, 0) for f in ("nice", "softirq", "irq")))

        busy = busy_s(after) - busy_s(before)
        seconds["other"] = max(busy - sum(seconds.values()), 0.0)
        per_unit = {g: round(s * 1000 / units, 2) if units else math.nan for g, s in seconds.items()}
        return {"cpu_s": {g: round(s, 2) for g, s in seconds.items()}, "cpu_ms_per_saga": per_unit,
                "cpu_ms_per_saga_total": round(sum(per_unit.values()), 2) if units else math.nan,
                "busy_cores": round(busy / self.wall_s, 2) if self.wall_s else math.nan,
                "cores": self._psutil.cpu_count(), "wall_s": round(self.wall_s, 2)}


class Ticker:
    """Calls `line()` every `interval` seconds in a thread and logs what it returns (progress lines)."""

    def __init__(self, line: Callable[[], str], interval: float = 1.0) -> None:
        self.line = line
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                log(self.line())
            except Exception as exc:  # noqa: BLE001 - progress must never kill the run
                log(f"(progress unavailable: {type(exc).__name__}: {exc})")


def run_clients(count: int, jobs: int, work: Callable[[int, Any], None], make_state: Callable[[], Any],
                stop: threading.Event) -> list[BaseException]:
    """Run `jobs` jobs 0..jobs-1 from `count` threads, each with its own state (e.g. a requests.Session);
    returns the exceptions threads died of. `stop` set makes them stop taking jobs."""
    counter = iter(range(jobs))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client() -> None:
        state = make_state()
        try:
            while not stop.is_set() and not STOP.is_set():
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                work(index, state)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()
        finally:
            close = getattr(state, "close", None)
            if close:
                close()

    threads = [threading.Thread(target=client, name=f"client-{i}", daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):  # join with a timeout so Ctrl-C reaches the main thread
        check_stop()
        for t in threads:
            t.join(timeout=0.2)
    check_stop()
    return errors


# --------------------------------------------------------------------------------------------------- numbers

def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) with linear interpolation between closest ranks; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
            "mean_ms": sum(ms) / len(ms) if ms else math.nan, "max_ms": max(ms) if ms else math.nan}


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.{digits}f}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 1) -> None:
    cells = [[fmt(c, digits) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}", flush=True)
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=False))))
    print(line)
    for row in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))))
    print(flush=True)


def clean_json(value: Any) -> Any:
    """NaN/inf become null so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(clean_json(payload), indent=2, default=str) + "\n")
    return path


def new_figure(nrows: int, ncols: int, width: float = 6.0, height: float = 4.2) -> tuple[Any, list[Any]]:
    """A matplotlib figure (Agg backend: no display needed) and its axes as a flat list."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save_png(name: str, fig: Any, footer: str) -> Path:
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.png"
    fig.text(0.01, 0.01, footer, fontsize=7, color="#555555", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def grouped_bars(ax: Any, groups: Sequence[str], series: dict[str, Sequence[float]], ylabel: str,
                 title: str) -> None:
    """Bars for each series side by side within each group, values printed above the bars."""
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [0 if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]
        bars = ax.bar(xs, heights, width, label=label)
        for bar, v in zip(bars, values, strict=False):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                text = "n/m"
            else:
                text = f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


# --------------------------------------------------------------------------------------------------- provenance

def command_line() -> str:
    """The command that produced these numbers, as one can paste it from the project root."""
    python = sys.executable
    with contextlib.suppress(ValueError):
        python = os.path.relpath(python, ROOT) if Path(os.path.abspath(python)).is_relative_to(ROOT) else python
    script = sys.argv[0]
    with contextlib.suppress(ValueError):
        script = os.path.relpath(Path(script).resolve(), ROOT)
    return shlex.join([python, script, *sys.argv[1:]])


def _git_head() -> str | None:
    """The checked-out commit, read from .git's files (no git command is run)."""
    try:
        head = (ROOT / ".git" / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        loose = ROOT / ".git" / ref
        if loose.exists():
            return loose.read_text().strip()
        packed = ROOT / ".git" / "packed-refs"
        for line in packed.read_text().splitlines() if packed.exists() else []:
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


def environment() -> dict[str, Any]:
    import psutil

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "commit": _git_head(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def log_dir(stack: contextlib.ExitStack, name: str, keep: bool) -> Path:
    """Where the child processes' logs go: a temporary folder, removed at the end unless `keep`."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    if keep:
        stack.callback(lambda: log(f"logs kept in {path}"))
    else:
        stack.callback(lambda: shutil.rmtree(path, ignore_errors=True))
    return path
