"""`bookmarket retention run`: move finished sagas older than RETENTION_DAYS (or --older-than-days) out of the
working tables now, in batches, printing each batch and the total; `--dry-run` only counts them. Talks to the
database (DATABASE_URL) directly, like `bookmarket migrate`."""
from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from infra.config import Settings
from infra.db import Database
from services import retention
from services.retention import Batch


def add_parser(sub: Any) -> None:
    top = sub.add_parser("retention", help="finished sagas older than RETENTION_DAYS leave the working tables "
                                           "(archived or deleted; orders, read models and audit log stay)")
    what = top.add_subparsers(dest="what", required=True)
    run = what.add_parser("run", help="move them now, in batches, until none is left; prints progress")
    run.add_argument("--older-than-days", type=float, default=None,
                     help="sagas that finished more than this many days ago (RETENTION_DAYS)")
    run.add_argument("--dry-run", action="store_true", help="only count the sagas a run would move")
    run.add_argument("--batch", type=int, default=None, help="sagas a transaction (RETENTION_BATCH)")
    run.add_argument("--mode", choices=("archive", "delete"), default=None,
                     help="archive the steps and attempts, or delete them (RETENTION_MODE)")


def run(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    days = args.older_than_days if args.older_than_days is not None else settings.retention_days
    if days <= 0:
        print("bookmarket: RETENTION_DAYS is 0 (finished sagas are kept forever): set it or give "
              "--older-than-days N (above 0)", file=sys.stderr, flush=True)
        return 2
    batch = args.batch or settings.retention_batch
    if batch < 1:
        print("bookmarket: --batch must be 1 or more", file=sys.stderr, flush=True)
        return 2
    mode = args.mode or settings.retention_mode
    db = Database.from_url(settings.database_url, 2)
    try:
        if args.dry_run:
            count = retention.count_old(db, days)
            print(f"dry run: {count} finished saga(s) ended more than {days:g} day(s) ago would be moved "
                  f"(mode {mode}); nothing was changed", file=out, flush=True)
            return 0
        print(f"retention: finished sagas ended more than {days:g} day(s) ago, {batch} a batch, mode {mode}",
              file=out, flush=True)
        shown = [0]

        def progress(done: Batch) -> None:
            shown[0] += 1
            rate = done.rows / done.seconds if done.seconds > 0 else 0.0
            print(f"batch {shown[0]}: {done.sagas} sagas, {done.steps} steps, {done.attempts} attempts in "
                  f"{done.seconds:.2f}s ({rate:,.0f} rows/s)", file=out, flush=True)

        report = retention.run(db, days, batch, mode, on_batch=progress)
        rate = report.rows / report.seconds if report.seconds > 0 else 0.0
        print(f"done: {report.sagas} sagas, {report.steps} steps, {report.attempts} attempts ({report.rows} rows) in "
              f"{report.batches} batch(es), {report.seconds:.2f}s, {rate:,.0f} rows/s", file=out, flush=True)
        return 0
    finally:
        db.dispose()
