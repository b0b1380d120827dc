"""The saga's provider calls as a DBOS workflow (pay -> ship -> notify, one DBOS step each), the second baseline
of bench/saga_throughput.py. One process of it is one DBOS executor; saga_throughput.py starts W of them.

    python -m bench.dbos_app worker --sysdb URL --concurrency K --poll S
        "queue" mode: dequeue workflows from the DBOS queue `bench` (at most K running in this process, polling
        every S seconds) until SIGTERM. The benchmark enqueues them with a DBOSClient, from its client threads.
    python -m bench.dbos_app start --sysdb URL --first I --count N --threads T --go-file PATH
        "start" mode: once PATH exists, T threads of this process call DBOS.start_workflow for workflows
        I..I+N-1 (ids m-<i>) as fast as they can, without waiting for them; the workflows run in this process.

Both print READY once DBOS is launched (and, with --warmup K, K warm-up workflows have run), and stay up until
SIGTERM so their memory can be sampled and they are stopped like every other process. The provider URLs come
from PAYMENT_URL / DELIVERY_URL / MESSAGING_URL, as for the saga's workers.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSConfig, SetWorkflowID

from infra.config import Settings
from infra.providers import Providers

APP_NAME = "bmbench"
QUEUE = "bench"
WORKFLOW = "bench_order"

_settings = Settings.from_env()
_providers = Providers.from_urls(_settings.payment_url, _settings.delivery_url, _settings.messaging_url,
                                 _settings.provider_timeout_s)


def _key(order: dict[str, Any], step: str) -> str:
    return f"{order['run']}-{order['order_id']}:{step}"


@DBOS.step(name="bench_pay")
def pay(order: dict[str, Any]) -> str:
    return _providers.payment.charge(_key(order, "pay"), order["order_id"], order["customer_id"],
                                     order["amount_cents"]).reference


@DBOS.step(name="bench_ship")
def ship(order: dict[str, Any]) -> str:
    return _providers.delivery.ship(_key(order, "ship"), order["order_id"], order["customer_id"], order["book_id"],
                                    order["qty"]).reference


@DBOS.step(name="bench_notify")
def notify(order: dict[str, Any]) -> str:
    return _providers.messaging.send(_key(order, "notify"), order["order_id"], order["customer_id"],
                                     f"Your order {order['order_id']} has shipped.").reference


@DBOS.workflow(name=WORKFLOW)
def order_workflow(order: dict[str, Any]) -> int:
    pay(order)
    ship(order)
    notify(order)
    return int(order["order_id"])


def make_order(run: str, order_id: int) -> dict[str, Any]:
    """The workflow's input: the same fields the saga's provider calls send."""
    return {"run": run, "order_id": order_id, "customer_id": 1 + order_id % 50, "book_id": 1, "qty": 1,
            "amount_cents": 4299}


def _launch(sysdb: str, executor: str, pool: int | None) -> None:
    config: DBOSConfig = {"name": APP_NAME, "system_database_url": sysdb, "executor_id": executor,
                          "log_level": os.environ.get("BENCH_DBOS_LOG_LEVEL", "WARNING")}
    if pool:
        config["sys_db_pool_size"] = pool
    DBOS(config=config)
    DBOS.launch()


def _warm_up(run: str, executor: str, count: int) -> None:
    handles = []
    for i in range(count):
        with SetWorkflowID(f"warm-{executor}-{i}"):
            handles.append(DBOS.start_workflow(order_workflow, make_order(f"{run}-warm-{executor}", i)))
    for handle in handles:
        handle.get_result()


def _start(args: argparse.Namespace, stop: threading.Event) -> None:
    """Start workflows first..first+count-1 from `threads` threads, not waiting for them."""
    ids = iter(range(args.first, args.first + args.count))
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            with lock:
                i = next(ids, None)
            if i is None:
                return
            with SetWorkflowID(f"m-{i}"):
                DBOS.start_workflow(order_workflow, make_order(args.run, i))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"started {args.count} workflows", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.dbos_app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("worker", "start"))
    p.add_argument("--sysdb", required=True, help="DBOS system database URL")
    p.add_argument("--executor", default=f"bench-{os.getpid()}", help="DBOS executor id of this process")
    p.add_argument("--run", default="dbos", help="run label used in the providers' idempotency keys")
    p.add_argument("--pool", type=int, default=None, help="sys_db_pool_size (DBOS default when unset)")
    p.add_argument("--warmup", type=int, default=0, help="warm-up workflows to run before READY")
    p.add_argument("--concurrency", type=int, default=16, help="worker mode: queue worker_concurrency")
    p.add_argument("--poll", type=float, default=0.05, help="worker mode: queue polling interval, seconds")
    p.add_argument("--first", type=int, default=0, help="start mode: first workflow number")
    p.add_argument("--count", type=int, default=0, help="start mode: how many workflows")
    p.add_argument("--threads", type=int, default=16, help="start mode: client threads")
    p.add_argument("--go-file", default=None, help="start mode: begin once this file exists")
    args = p.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    _launch(args.sysdb, args.executor, args.pool)
    try:
        if args.mode == "worker":
            DBOS.register_queue(QUEUE, worker_concurrency=args.concurrency, polling_interval_sec=args.poll,
                                on_conflict="always_update")
        _warm_up(args.run, args.executor, args.warmup)
        print("READY", flush=True)
        if args.mode == "start":
            go = Path(args.go_file) if args.go_file else None
            while go is not None and not go.exists() and not stop.is_set():
                time.sleep(0.002)
            if not stop.is_set():
                _start(args, stop)
        while not stop.wait(0.5):
            pass
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
