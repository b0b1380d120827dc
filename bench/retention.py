"""Retention's speed on PostgreSQL: how many rows a second `bookmarket retention run` moves out of the working
tables, and how long each batch (one transaction, its sagas locked) lasts.

On a fresh database: --sagas finished sagas (COMPLETED, ended 60 days ago, 5 steps and 5 attempts each, as an
order saga leaves them), plus --active running sagas and --parked parked FAILED ones that must stay; then
retention (older than 30 days) in batches of --batch, for each --modes (archive, delete), each on its own fresh
database. Prints the plan of the batch's search (it must read ix_sagas_finished_retention only), each mode's totals,
rows/s and sagas/s, and the batch durations (p50, max), and checks that only the old finished sagas went.

    .venv/bin/python bench/retention.py --sagas 200000 --batch 1000 --modes archive,delete
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import create_database, log, run_main, sa_url  # noqa: E402
from domain.model import utcnow  # noqa: E402
from infra import retention as store  # noqa: E402
from infra.db import Database  # noqa: E402
from infra.migrate import upgrade  # noqa: E402
from services import retention  # noqa: E402

STEPS = ("pay", "confirm", "ship", "mark_shipped", "notify")


def seed(url: str, finished: int, active: int, parked: int) -> None:
    """Orders and sagas made with SQL in bulk: finished ones ended 60 days ago, active and parked ones are old too
    (retention must leave them whatever their age)."""
    eng = sa.create_engine(sa_url(url))
    total = finished + active + parked
    with eng.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO orders (id, customer_id, book_id, qty, amount_cents, status, created_at, updated_at) "
            "SELECT g, g % 5000, 1, 1, 5499, 'SHIPPED', now() - interval '61 days', now() - interval '60 days' "
            "FROM generate_series(1, :n) g"), {"n": total})
        conn.execute(sa.text(
            "INSERT INTO customer_orders (order_id, customer_id, book_id, title, qty, amount_cents, status, saga_id, "
            "created_at, updated_at) SELECT g, g % 5000, 1, 'A book', 1, 5499, 'SHIPPED', g, "
            "now() - interval '61 days', now() - interval '60 days' FROM generate_series(1, :n) g"), {"n": total})
        conn.execute(sa.text(
            "INSERT INTO sagas (id, kind, version, order_id, status, cancel_requested, recoveries, created_at, "
            "updated_at, finished_at) SELECT g, 'order', 1, g, "
            "CASE WHEN g <= :f THEN 'COMPLETED' WHEN g <= :f + :a THEN 'RUNNING' ELSE 'FAILED' END, false, 0, "
            "now() - interval '61 days', now() - interval '60 days', "
            "CASE WHEN g <= :f THEN now() - interval '60 days' END FROM generate_series(1, :n) g"),
            {"n": total, "f": finished, "a": active})
        conn.execute(sa.text(
            "INSERT INTO saga_steps (saga_id, name, position, status, attempts, max_attempts, created_at, "
            "started_at, finished_at, waited_s, outcome_unknown) "
            "SELECT g, s.name, s.pos, CASE WHEN g <= :f THEN 'SUCCEEDED' ELSE 'PENDING' END, 1, 5, "
            "now() - interval '61 days', now() - interval '61 days', now() - interval '60 days', 0, false "
            "FROM generate_series(1, :n) g CROSS JOIN unnest(CAST(:names AS text[])) WITH ORDINALITY s(name, pos)"),
            {"n": total, "f": finished, "names": list(STEPS)})
        conn.execute(sa.text(
            "INSERT INTO step_attempts (saga_id, step, attempt, started_at, finished_at, outcome, task_id, "
            "provider_ref, outcome_unknown) SELECT g, s.name, 1, now() - interval '61 days', "
            "now() - interval '60 days', 'SUCCEEDED', md5(g::text || s.name), 'ref-' || g, false "
            "FROM generate_series(1, :f) g CROSS JOIN unnest(CAST(:names AS text[])) s(name)"),
            {"f": finished, "names": list(STEPS)})
        conn.execute(sa.text("SELECT setval('sagas_id_seq', :n), setval('orders_id_seq', :n)"), {"n": total})
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    eng.dispose()


def plan(db: Database) -> str:
    """PostgreSQL's plan for a batch's search."""
    cutoff = utcnow() - timedelta(days=30)
    with db.transaction() as conn:
        query = (sa.select(store.sagas.c.id).where(store.sagas.c.status.in_(store.FINISHED),
                                                  store.sagas.c.finished_at < cutoff)
                 .order_by(store.sagas.c.finished_at).limit(1000).with_for_update(skip_locked=True))
        compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        return "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}"))


def count(db: Database, table: str) -> int:
    with db.reading() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def one_mode(stack: contextlib.ExitStack, mode: str, args: argparse.Namespace) -> dict[str, float]:
    url = create_database(stack, "bm_bench_retention")
    upgrade(url)
    started = time.monotonic()
    seed(url, args.sagas, args.active, args.parked)
    log(f"{mode}: seeded {args.sagas} finished + {args.active} running + {args.parked} parked sagas in "
        f"{time.monotonic() - started:.1f}s")
    db = Database.from_url(url, 2)
    stack.callback(db.dispose)
    if mode == "archive":
        log("the batch's search:\n" + plan(db))
    durations: list[float] = []

    def progress(batch: retention.Batch) -> None:
        durations.append(batch.seconds)
        if len(durations) % 50 == 0:
            log(f"{mode}: {len(durations)} batches")

    report = retention.run(db, 30, args.batch, mode, on_batch=progress)
    left = count(db, "sagas")
    assert report.sagas == args.sagas and left == args.active + args.parked, (report, left)
    assert count(db, "orders") == count(db, "customer_orders") == args.sagas + args.active + args.parked
    assert count(db, "sagas_archive") == args.sagas
    result = {"sagas": report.sagas, "rows": report.rows, "seconds": report.seconds,
              "rows_per_s": report.rows / report.seconds, "sagas_per_s": report.sagas / report.seconds,
              "batch_p50_ms": statistics.median(durations) * 1000, "batch_max_ms": max(durations) * 1000}
    log(f"{mode}: {report.sagas} sagas, {report.rows} rows in {report.batches} batches, {report.seconds:.1f}s: "
        f"{result['rows_per_s']:,.0f} rows/s, {result['sagas_per_s']:,.0f} sagas/s; batch p50 "
        f"{result['batch_p50_ms']:.0f} ms, max {result['batch_max_ms']:.0f} ms")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sagas", type=int, default=200_000, help="finished sagas to move (200000)")
    p.add_argument("--active", type=int, default=20_000, help="running sagas that must stay (20000)")
    p.add_argument("--parked", type=int, default=1_000, help="parked FAILED sagas that must stay (1000)")
    p.add_argument("--batch", type=int, default=1000, help="sagas a batch (1000)")
    p.add_argument("--modes", default="archive,delete")
    args = p.parse_args()
    print("command: .venv/bin/python bench/retention.py " + " ".join(sys.argv[1:]), flush=True)

    def body(stack: contextlib.ExitStack) -> int:
        results = {mode: one_mode(stack, mode, args) for mode in args.modes.split(",")}
        print("\nmode      sagas     rows       s    rows/s  sagas/s  batch p50  batch max")
        for mode, r in results.items():
            print(f"{mode:8} {r['sagas']:6.0f} {r['rows']:8.0f} {r['seconds']:7.1f} {r['rows_per_s']:9,.0f} "
                  f"{r['sagas_per_s']:8,.0f} {r['batch_p50_ms']:7.0f} ms {r['batch_max_ms']:7.0f} ms")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
