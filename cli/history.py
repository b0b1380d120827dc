"""`bookmarket history fill`: fill PostgreSQL with a realistic history of finished orders (COPY, in batches, with
progress), to measure that the cost of what the engine does stays flat as the history grows."""
from __future__ import annotations

import argparse
import sys
from typing import Any

import sqlalchemy as sa

from infra.history import FillReport, Mix, conninfo, fill


def add_parser(sub: Any) -> None:
    history = sub.add_parser("history", help="fill PostgreSQL with a history of finished orders (for scale tests)")
    what = history.add_subparsers(dest="what", required=True)
    fill_cmd = what.add_parser("fill", help="add N finished orders with their sagas, steps, attempts and read models "
                                            "(COPY), then VACUUM ANALYZE")
    fill_cmd.add_argument("--orders", type=int, required=True, help="how many finished orders to add")
    fill_cmd.add_argument("--database-url", default=None, help="PostgreSQL (default: DATABASE_URL)")
    fill_cmd.add_argument("--customers", type=int, default=None, help="spread over this many customers "
                                                                      "(default: orders / 10)")
    fill_cmd.add_argument("--failed-share", type=float, default=Mix.failed,
                          help=f"share parked FAILED with a failing step ({Mix.failed})")
    fill_cmd.add_argument("--rejected-share", type=float, default=Mix.rejected,
                          help=f"share COMPENSATED after a declined payment, order REJECTED ({Mix.rejected})")
    fill_cmd.add_argument("--cancelled-share", type=float, default=Mix.cancelled,
                          help=f"share COMPENSATED after the customer's cancel, order CANCELLED ({Mix.cancelled})")
    fill_cmd.add_argument("--batch", type=int, default=20_000, help="orders per COPY transaction (20000)")
    fill_cmd.add_argument("--span-days", type=float, default=730.0, help="created_at spread over this many days "
                                                                         "up to a day ago (730)")
    fill_cmd.add_argument("--jobs", type=int, default=2, help="COPY sessions at once (2)")
    fill_cmd.add_argument("--seed", type=int, default=1)


def _progress(report: FillReport, total: int) -> None:
    rate = report.orders / report.seconds if report.seconds else 0.0
    eta = (total - report.orders) / rate if rate else 0.0
    print(f"  {report.orders:>10,} / {total:,} orders ({100 * report.orders / total:5.1f}%)  {report.rows:>12,} rows  "
          f"{report.rows_per_s:>9,.0f} rows/s  {rate:>8,.0f} orders/s  ETA {eta:5.0f}s", flush=True)


def run(args: argparse.Namespace, database_url: str) -> int:
    url = args.database_url or database_url
    try:
        conninfo(url)
    except ValueError as exc:
        print(f"bookmarket: {exc}", file=sys.stderr, flush=True)
        return 2
    shares = (args.failed_share, args.rejected_share, args.cancelled_share)
    if args.orders < 1 or args.batch < 1 or args.jobs < 1 or not all(0 <= share <= 1 for share in shares):
        print("bookmarket: --orders, --batch and --jobs must be at least 1, and each share between 0 and 1",
              file=sys.stderr, flush=True)
        return 2
    mix = Mix(failed=args.failed_share, rejected=args.rejected_share, cancelled=args.cancelled_share)
    print(f"history fill: {args.orders:,} finished orders into {_masked(url)}", flush=True)
    try:
        report = fill(url, args.orders, args.customers, mix, batch=args.batch, span_days=args.span_days,
                      seed=args.seed, progress=_progress, jobs=args.jobs)
    except ValueError as exc:
        print(f"bookmarket: {exc}", file=sys.stderr, flush=True)
        return 2
    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(report.by_outcome.items()))
    print(f"filled {report.orders:,} orders (ids from {report.first_order_id:,}), {report.rows:,} rows in "
          f"{report.seconds:.1f}s ({report.rows_per_s:,.0f} rows/s); VACUUM ANALYZE {report.analyze_seconds:.1f}s",
          flush=True)
    print(f"outcomes: {outcomes}", flush=True)
    return 0


def _masked(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)

