"""Sandbox load: charges per second with the ledgers in memory only and kept in a data folder (the journal).

Two sandboxes run under gunicorn as `bookmarket up` runs them (one process, 64 threads): one without a data folder,
one with SANDBOX_DATA_DIR in a temporary folder. --clients Python threads (urllib3) post charges with fresh
Idempotency-Keys to one of them for --seconds, then to the other, --repeat times, interleaved. The journaled one is
then restarted to time how long replaying its journal delays /health. The client shares the machine's cores, so
compare the two rows rather than read them as the sandbox's limit. Results: a table and bench/results/<name>.json.

Example:  .venv/bin/python bench/sandbox_load.py --seconds 10 --repeat 3
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import urllib3  # noqa: E402

from bench import common as c  # noqa: E402

MODES = ("memory", "journal")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sandbox_load.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10, help="seconds of load per run (10)")
    p.add_argument("--clients", type=int, default=16, help="client threads (16)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each mode, interleaved (3)")
    p.add_argument("--name", default="sandbox_load", help="results file name (sandbox_load)")
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    return p.parse_args(argv)


def measure(sandbox: c.Sandbox, clients: int, seconds: float) -> dict[str, float]:
    """Charges per second and the sandbox's CPU milliseconds per charge over one run."""
    with c.CpuMeter({"sandbox": [sandbox.proc.pid]}, named={}) as meter:
        charges = post_charges(sandbox.url, clients, seconds)
    cpu_s = meter.report(charges)["cpu_s"]["sandbox"]
    return {"charges_per_s": charges / meter.wall_s, "cpu_ms_per_charge": cpu_s * 1000 / charges}


def post_charges(url: str, clients: int, seconds: float) -> int:
    """Post charges with fresh keys from `clients` threads for `seconds`; every one must answer 201."""
    pool = urllib3.PoolManager(maxsize=clients)
    stop = threading.Event()
    done = [0]
    lock = threading.Lock()

    def post(_index: int, _state: Any) -> None:
        body = json.dumps({"order_id": 1, "amount_cents": 100})
        answer = pool.request("POST", f"{url}/payment/charges", body=body,
                              headers={"Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"})
        if answer.status != 201:
            raise RuntimeError(f"charge answered {answer.status}: {answer.data[:200]!r}")
        with lock:
            done[0] += 1

    timer = threading.Timer(seconds, stop.set)
    timer.start()
    errors = c.run_clients(clients, sys.maxsize, post, lambda: None, stop)
    timer.cancel()
    if errors:
        raise errors[0]
    return done[0]


def restart_s(stack: contextlib.ExitStack, sandbox: c.Sandbox, logs: Path, data: Path) -> float:
    """Stop the journaled sandbox and time a new one on its data folder until /health answers."""
    sandbox.proc.stop()
    started = time.monotonic()
    c.start_sandbox(stack, logs, data, "sandbox-restarted")
    return time.monotonic() - started


def _row(mode: str, runs: list[dict[str, float]]) -> list[str]:
    """A table row: the median of each figure, then every run's value in brackets."""
    cells = [mode]
    for figure, digits in (("charges_per_s", 0), ("cpu_ms_per_charge", 2)):
        values = [run[figure] for run in runs]
        cells.append(f"{statistics.median(values):.{digits}f} ({', '.join(f'{v:.{digits}f}' for v in values)})")
    return cells


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body(stack: contextlib.ExitStack) -> int:
        logs = c.log_dir(stack, "sandbox", args.keep_logs)
        data = logs / "data"
        sandboxes = {"memory": c.start_sandbox(stack, logs, None, "sandbox-memory"),
                     "journal": c.start_sandbox(stack, logs, data, "sandbox-journal")}
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for repeat in range(args.repeat):
            for mode in MODES:
                runs[mode].append(measure(sandboxes[mode], args.clients, args.seconds))
                c.log(f"run {repeat + 1}, {mode}: {runs[mode][-1]}")
        journal_lines = sum(1 for _ in (data / "sandbox-ledgers.jsonl").open("rb"))
        replay_s = restart_s(stack, sandboxes["journal"], logs, data)
        c.print_table(f"Sandbox charges, {args.clients} clients, {args.seconds:g} s a run, medians (each run)",
                      ["ledgers", "charges/s", "sandbox CPU ms per charge"], [_row(mode, runs[mode]) for mode in MODES])
        print(f"restart on a journal of {journal_lines:,} calls: /health answered after {replay_s:.1f} s")
        c.write_json(args.name, {"command": c.command_line(), "environment": c.environment(), "runs": runs,
                                 "journal_lines": journal_lines, "restart_s": replay_s})
        return 0

    return c.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
