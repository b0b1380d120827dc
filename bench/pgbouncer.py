"""Saga throughput straight to PostgreSQL and through PgBouncer in transaction mode.

For each mode, on a fresh database: the API under gunicorn (2 processes), one worker process (192 threads, with
its sweeper) and the sandbox (--latency-ms per call) as tests/integration/test_pgbouncer.py starts them; C client
threads post N orders, then the saga table is polled (straight on PostgreSQL) until every saga is terminal.

  direct-on   DATABASE_URL to PostgreSQL, DATABASE_PREPARED_STATEMENTS=on (the default)
  direct-off  the same with DATABASE_PREPARED_STATEMENTS=off: the cost of parsing and planning every statement
  pgbouncer   DATABASE_URL to Debian's PgBouncer (pool_mode=transaction, default_pool_size --pool), setting off

Throughput = completed sagas / (last finished_at - first created_at); also the most server connections the
database had at once (pg_stat_activity, sampled every 50 ms; the benchmark's own polling connection is one of them).

    .venv/bin/python bench/pgbouncer.py --orders 400 --clients 16 --pool 5
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

import tests.integration.test_pgbouncer as bouncing  # noqa: E402
from tests.conftest import create_pg_database  # noqa: E402
from tests.support import PG_ADMIN_URL, bearer  # noqa: E402

MODES = ("direct-on", "direct-off", "pgbouncer")


def run(mode: str, orders: int, clients: int, pool: int, latency_ms: list[int]) -> dict[str, object]:
    url, drop = create_pg_database(PG_ADMIN_URL)
    name = sa.engine.make_url(url).database or ""
    bouncer = None
    try:
        if mode == "pgbouncer":
            bouncing.SERVER_CONNECTIONS = pool
            bouncer = bouncing.PgBouncer(PG_ADMIN_URL, {"bm": name})
            bouncer.start()
            url = bouncer.url("bm")
        prepared = "on" if mode == "direct-on" else "off"
        with tempfile.TemporaryDirectory(prefix="bm-bench-pgb-") as tmp, \
                bouncing.started(Path(tmp), url, name, prepared) as stack, \
                bouncing.ServerConnections(PG_ADMIN_URL, name) as server:
            stack.behave("payment", latency_ms=latency_ms)
            stack.behave("delivery", latency_ms=latency_ms)
            stack.behave("messaging", latency_ms=latency_ms)
            with ThreadPoolExecutor(clients) as threads:
                answers = list(threads.map(lambda i: requests.post(
                    f"{stack.api.url}/orders", json={"customer_id": i + 1, "book_id": 1, "qty": 1}, headers=bearer(),
                    timeout=60).status_code, range(orders)))
            with psycopg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", autocommit=True) as conn:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    row = conn.execute("SELECT count(*) FILTER (WHERE status IN ('COMPLETED', 'COMPENSATED', "
                                       "'FAILED')), count(*) FILTER (WHERE status = 'COMPLETED'), "
                                       "extract(epoch FROM max(finished_at) - min(created_at)) FROM sagas").fetchone()
                    assert row is not None
                    if row[0] >= answers.count(202):
                        break
                    time.sleep(0.5)
        refused = sorted(code for code in answers if code != 202)
        return {"accepted": answers.count(202), "completed": row[1], "seconds": float(row[2] or 0),
                "sagas_per_s": row[1] / float(row[2] or 1), "server_connections": server.most, "refused": refused}
    finally:
        if bouncer is not None:
            bouncer.stop()
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--pool", type=int, default=5, help="PgBouncer's default_pool_size")
    parser.add_argument("--latency-ms", type=int, nargs=2, default=[0, 0])
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    print(f"command: .venv/bin/python bench/pgbouncer.py {' '.join(sys.argv[1:])}")
    print("| mode | accepted | completed | seconds | sagas/s | most server connections | not accepted |\n"
          "|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        r = run(mode, args.orders, args.clients, args.pool, args.latency_ms)
        print(f"| {mode} | {r['accepted']} | {r['completed']} | {r['seconds']:.1f} | {r['sagas_per_s']:.1f} | "
              f"{r['server_connections']} | {r['refused']} |", flush=True)


if __name__ == "__main__":
    main()
