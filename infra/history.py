"""Filling PostgreSQL with a realistic history of finished orders, fast: the rows a real finished order saga leaves
in every table (orders, sagas, saga_steps, step_attempts, payments, deliveries, notifications, customer_orders),
written with COPY in batches, ids continuing after the existing ones and the sequences moved past them.

The mix: mostly COMPLETED sagas (orders SHIPPED, a few with a retried payment or a notification that failed for
good), some COMPENSATED ones (a declined payment REJECTS the order; a customer's cancel before shipping refunds and
CANCELS it) and a few parked FAILED (a refund that kept failing after a refused shipment, or a payment whose workers
were lost too often). created_at spreads over `span_days` up to a day ago, older ids older.
"""
from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import sqlalchemy as sa

from saga.definition import SagaDefinition
from saga.order_saga import ORDER_SAGA

# table -> its columns, in the order the generator writes them
COLUMNS: dict[str, tuple[str, ...]] = {
    "orders": ("id", "customer_id", "book_id", "qty", "amount_cents", "status", "reason", "idempotency_key",
               "idempotency_scope", "created_at", "updated_at"),
    "sagas": ("id", "kind", "version", "order_id", "status", "cancel_requested", "reason", "recoveries", "created_at",
              "updated_at", "finished_at"),
    "saga_steps": ("saga_id", "name", "position", "status", "attempts", "max_attempts", "error", "task_id",
                   "provider_ref", "created_at", "started_at", "finished_at", "lease_until", "available_at",
                   "dispatched_at", "waited_s", "outcome_unknown"),
    "step_attempts": ("saga_id", "step", "attempt", "started_at", "finished_at", "outcome", "error", "task_id",
                      "provider_ref", "outcome_unknown"),
    "payments": ("order_id", "status", "amount_cents", "charge_ref", "refund_ref", "updated_at"),
    "deliveries": ("order_id", "status", "shipment_ref", "cancel_ref", "updated_at"),
    "notifications": ("id", "order_id", "saga_id", "step", "customer_id", "text", "status", "attempts", "error",
                      "message_ref", "created_at", "updated_at"),
    "customer_orders": ("order_id", "customer_id", "book_id", "title", "qty", "amount_cents", "status", "saga_id",
                        "created_at", "updated_at"),
}
SEQUENCES = (("orders", "id"), ("sagas", "id"), ("notifications", "id"))
N = "\\N"  # NULL in COPY's text format

DECLINED = "payment declined: card declined (permanent)"
REFUSED = "delivery refused: address not deliverable (permanent)"
REFUND_DOWN = "payment provider answered 503 (retryable)"
MESSAGING_DOWN = "messaging refused: recipient unreachable (permanent)"
LOST = "lease expired: the worker running attempt {n} was lost"

Attempt = tuple[str, str, str, str | None, bool]  # started, finished, outcome, error, outcome unknown


@dataclass(frozen=True)
class Mix:
    """Shares of each ending; the rest COMPLETED."""

    failed: float = 0.002
    rejected: float = 0.03
    cancelled: float = 0.03
    notify_failed: float = 0.005
    retried_payment: float = 0.05


@dataclass
class FillReport:
    orders: int = 0
    rows: int = 0
    seconds: float = 0.0
    analyze_seconds: float = 0.0
    first_order_id: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def conninfo(database_url: str) -> str:
    """A libpq URL from the SQLAlchemy one; ValueError for anything but PostgreSQL."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"history fill needs PostgreSQL (COPY); DATABASE_URL is {url.get_backend_name()}: "
                         f"{url.render_as_string(hide_password=True)}")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _ts(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(sep=" ")


def _text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _row(*values: Any) -> str:
    return "\t".join(N if v is None else ("t" if v is True else "f" if v is False else str(v)) for v in values)


class _Writer:
    """The COPY lines of one batch, by table."""

    def __init__(self, definition: SagaDefinition, rng: random.Random) -> None:
        self.lines: dict[str, list[str]] = {table: [] for table in COLUMNS}
        self.rng = rng
        self.position = {s.name: i for i, s in enumerate(definition.all_steps)}
        self.max_attempts = {s.name: s.retry.max_attempts for s in definition.all_steps}
        self.definition = definition

    def ref(self, prefix: str) -> str:
        return f"{prefix}_{self.rng.getrandbits(48):012x}"

    def task(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def step(self, saga_id: int, name: str, status: str, created: str, started: str | None, finished: str,
             attempts: Sequence[Attempt], ref: str | None = None,
             error: str | None = None) -> None:
        """One step row and its attempt rows; attempts: (started, finished, outcome, error, outcome_unknown)."""
        task = self.task() if attempts else None
        unknown = bool(attempts and attempts[-1][4])
        self.lines["saga_steps"].append(_row(
            saga_id, name, self.position[name], status, len(attempts) or (1 if started else 0),
            self.max_attempts[name], error, task, ref, created, started, finished, None,
            started if attempts else None, None, 0.0, unknown))  # a local step is never due: it runs inline
        for n, (a_start, a_end, outcome, a_error, a_unknown) in enumerate(attempts, 1):
            last = n == len(attempts)
            self.lines["step_attempts"].append(_row(
                saga_id, name, n, a_start, a_end, outcome, a_error, task if last else self.task(),
                ref if last else None, a_unknown))

    def skipped(self, saga_id: int, names: tuple[str, ...], created: str, finished: str) -> None:
        for name in names:
            self.lines["saga_steps"].append(_row(
                saga_id, name, self.position[name], "SKIPPED", 0, self.max_attempts[name], None, None, None,
                created, None, finished, None, None, None, 0.0, False))


@dataclass(frozen=True)
class _Order:
    id: int
    saga_id: int
    customer_id: int
    book_id: int
    title: str
    qty: int
    amount_cents: int
    at: float  # epoch of its creation


def _fill_one(w: _Writer, o: _Order, outcome: str, notification_id: int, mix: Mix) -> None:
    """Every row of one finished order of `outcome`."""
    t = [_ts(o.at + dt) for dt in (0.0, 0.35, 0.4, 0.9, 0.95, 1.3, 1.6, 2.0)]
    s, created = o.saga_id, t[0]
    ok, done = "SUCCEEDED", "COMPENSATED"  # a forward step succeeds; a compensation step (an undo, a message) is done
    msgs = ORDER_SAGA.messages
    amount = f"{o.amount_cents / 100:.2f} EUR"
    if outcome in ("COMPLETED", "NOTIFY_FAILED"):
        pay_tries: list[Attempt] = [(t[0], t[1], ok, None, False)]
        if w.rng.random() < mix.retried_payment:
            pay_tries.insert(0, (t[0], t[0], "FAILED", "payment provider did not answer in 2.0s (retryable)",
                                 True))
        charge, shipment = w.ref("ch"), w.ref("sh")
        w.step(s, "pay", ok, created, t[0], t[1], pay_tries, charge)
        w.step(s, "confirm", ok, created, t[1], t[1], [])
        w.step(s, "ship", ok, created, t[2], t[3], [(t[2], t[3], ok, None, False)], shipment)
        w.step(s, "mark_shipped", ok, created, t[3], t[3], [])
        text = msgs["shipped"].format(order_id=o.id, title=o.title)
        if outcome == "NOTIFY_FAILED":
            w.step(s, "notify", "FAILED", created, t[4], t[5], [(t[4], t[5], "FAILED", MESSAGING_DOWN, False)],
                   error=MESSAGING_DOWN)
            note: tuple[str, str | None, str | None] = ("FAILED", MESSAGING_DOWN, None)
        else:
            msg = w.ref("msg")
            w.step(s, "notify", ok, created, t[4], t[5], [(t[4], t[5], ok, None, False)], msg)
            note = ("SENT", None, msg)
        w.lines["payments"].append(_row(o.id, "CHARGED", o.amount_cents, charge, None, t[1]))
        w.lines["deliveries"].append(_row(o.id, "SHIPPED", shipment, None, t[3]))
        _finish(w, o, "SHIPPED", None, "COMPLETED", False, None, 0, t[5])
        _notify(w, o, notification_id, "notify", text, note, t[4], t[5])
    elif outcome == "REJECTED":
        w.step(s, "pay", "FAILED", created, t[0], t[1], [(t[0], t[1], "FAILED", DECLINED, False)], error=DECLINED)
        w.skipped(s, ("confirm", "ship", "mark_shipped", "notify"), created, t[1])
        msg = w.ref("msg")
        w.step(s, "notify_outcome", done, t[1], t[2], t[3], [(t[2], t[3], done, None, False)], msg)
        w.lines["payments"].append(_row(o.id, "DECLINED", o.amount_cents, None, None, t[1]))
        reason = f"pay failed: {DECLINED}"
        _finish(w, o, "REJECTED", reason, "COMPENSATED", False, reason, 0, t[3])
        _notify(w, o, notification_id, "notify_outcome", msgs["not_paid"].format(order_id=o.id, title=o.title),
                ("SENT", None, msg), t[2], t[3])
    elif outcome == "CANCELLED":
        charge, refund, msg = w.ref("ch"), w.ref("rf"), w.ref("msg")
        w.step(s, "pay", ok, created, t[0], t[1], [(t[0], t[1], ok, None, False)], charge)
        w.step(s, "confirm", ok, created, t[1], t[1], [])
        w.skipped(s, ("ship", "mark_shipped", "notify"), created, t[2])
        w.step(s, "cancel_payment", "COMPENSATED", t[2], t[2], t[3], [(t[2], t[3], "COMPENSATED", None, False)],
               refund)
        w.step(s, "notify_outcome", done, t[3], t[4], t[5], [(t[4], t[5], done, None, False)], msg)
        w.lines["payments"].append(_row(o.id, "REFUNDED", o.amount_cents, charge, refund, t[3]))
        reason = "cancelled by customer"
        _finish(w, o, "CANCELLED", reason, "COMPENSATED", True, reason, 0, t[5])
        _notify(w, o, notification_id, "notify_outcome",
                msgs["cancelled_refunded"].format(order_id=o.id, title=o.title, amount=amount),
                ("SENT", None, msg), t[4], t[5])
    elif outcome == "FAILED_REFUND":
        charge = w.ref("ch")
        w.step(s, "pay", ok, created, t[0], t[1], [(t[0], t[1], ok, None, False)], charge)
        w.step(s, "confirm", ok, created, t[1], t[1], [])
        w.step(s, "ship", "FAILED", created, t[2], t[3], [(t[2], t[3], "FAILED", REFUSED, False)], error=REFUSED)
        w.skipped(s, ("mark_shipped", "notify"), created, t[3])
        tries: list[Attempt] = [(_ts(o.at + 1.0 + 2 * i), _ts(o.at + 1.5 + 2 * i), "FAILED", REFUND_DOWN, False)
                                for i in range(8)]
        w.step(s, "cancel_payment", "FAILED", t[3], tries[-1][0], tries[-1][1], tries, error=REFUND_DOWN)
        w.lines["payments"].append(_row(o.id, "CHARGED", o.amount_cents, charge, None, t[1]))
        reason = f"compensation cancel_payment failed: {REFUND_DOWN}"
        _finish(w, o, "PAID", None, "FAILED", False, reason, 0, tries[-1][1])
    else:  # FAILED_LOST: the payment's workers were lost too often; parked before any answer
        tries = [(_ts(o.at + 30 * i), _ts(o.at + 30 * i + 30), "LOST", LOST.format(n=i + 1), True) for i in range(4)]
        w.step(s, "pay", "FAILED", created, tries[-1][0], tries[-1][1], tries, error=tries[-1][3])
        w.skipped(s, ("confirm", "ship", "mark_shipped", "notify"), created, tries[-1][1])
        reason = f"parked after 4 recoveries: {tries[-1][3]} (step pay)"
        _finish(w, o, "PENDING", None, "FAILED", False, reason, 4, tries[-1][1])


def _finish(w: _Writer, o: _Order, order_status: str, order_reason: str | None, saga_status: str,
            cancel: bool, saga_reason: str | None, recoveries: int, ended: str) -> None:
    created = _ts(o.at)
    w.lines["orders"].append(_row(o.id, o.customer_id, o.book_id, o.qty, o.amount_cents, order_status,
                                  order_reason, None, None, created, ended))
    w.lines["sagas"].append(_row(o.saga_id, ORDER_SAGA.kind, ORDER_SAGA.version, o.id, saga_status, cancel,
                                 saga_reason, recoveries, created, ended, ended))
    w.lines["customer_orders"].append(_row(o.id, o.customer_id, o.book_id, _text(o.title), o.qty, o.amount_cents,
                                           order_status, o.saga_id, created, ended))


def _notify(w: _Writer, o: _Order, notification_id: int, step: str, text: str,
            note: tuple[str, str | None, str | None], created: str, updated: str) -> None:
    status, error, ref = note
    w.lines["notifications"].append(_row(notification_id, o.id, o.saga_id, step, o.customer_id, _text(text), status,
                                         0, error, ref, created, updated))


def _outcome(r: float, mix: Mix) -> str:
    edges = (("FAILED_REFUND", mix.failed / 2), ("FAILED_LOST", mix.failed / 2), ("REJECTED", mix.rejected),
             ("CANCELLED", mix.cancelled), ("NOTIFY_FAILED", mix.notify_failed))
    for name, share in edges:
        if r < share:
            return name
        r -= share
    return "COMPLETED"


def _starts(conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
    """The first free ids of orders, sagas and notifications (after the existing rows and their sequences)."""
    found = []
    for table, column in SEQUENCES:
        row = conn.execute(f"SELECT greatest((SELECT coalesce(max({column}), 0) FROM {table}), (SELECT CASE WHEN "
                           f"is_called THEN last_value ELSE 0 END FROM {_sequence(conn, table, column)}))").fetchone()
        assert row is not None
        found.append(int(row[0]) + 1)
    return found[0], found[1], found[2]


def _sequence(conn: psycopg.Connection[Any], table: str, column: str) -> str:
    row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column)).fetchone()
    assert row is not None and row[0], f"{table}.{column} has no sequence"
    return str(row[0])


def _copy(conn: psycopg.Connection[Any], lines: dict[str, list[str]]) -> int:
    written = 0
    with conn.cursor() as cur:
        for table, rows in lines.items():
            if not rows:
                continue
            with cur.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN") as copy:
                copy.write("\n".join(rows) + "\n")
            written += len(rows)
    return written


Progress = Callable[[FillReport, int], None]


@dataclass(frozen=True)
class _Plan:
    """What every batch needs to know: where ids start, the catalog, the mix and the time span."""

    database_url: str
    orders: int
    customers: int
    mix: Mix
    books: list[tuple[int, str, int]]
    order_id: int
    saga_id: int
    notification_id: int
    start_epoch: float
    step_s: float
    seed: int


def fill(database_url: str, orders: int, customers: int | None = None, mix: Mix | None = None,
         batch: int = 20_000, span_days: float = 730.0, seed: int = 1, progress: Progress | None = None,
         now: datetime | None = None, jobs: int = 2) -> FillReport:
    """Add `orders` finished orders with their sagas and every row they leave (`jobs` COPY sessions at once, each
    batch its own transaction), move the sequences past them, then VACUUM ANALYZE those tables."""
    end = (now or datetime.now(UTC)) - timedelta(days=1)
    with psycopg.connect(conninfo(database_url)) as conn:
        books = [(int(b), str(t), int(p)) for b, t, p in
                 conn.execute("SELECT id, title, price_cents FROM books ORDER BY id").fetchall()]
        if not books:
            raise ValueError("no books: run `bookmarket migrate` first (it seeds the catalog)")
        order_id, saga_id, notification_id = _starts(conn)
    plan = _Plan(database_url, orders, customers or max(1, orders // 10), mix or Mix(), books, order_id, saga_id,
                 notification_id, end.timestamp() - span_days * 86400, span_days * 86400 / max(orders, 1), seed)
    report = FillReport(first_order_id=order_id)
    began = time.monotonic()
    lock = threading.Lock()
    firsts = list(range(0, orders, batch))

    def work(k: int) -> None:
        with psycopg.connect(conninfo(database_url)) as conn:
            _skip_foreign_key_checks(conn)
            for first in firsts[k::jobs]:
                counts, rows = _write_batch(conn, plan, first, min(first + batch, orders))
                with lock:
                    report.rows += rows
                    report.orders += min(first + batch, orders) - first
                    for outcome, n in counts.items():
                        report.by_outcome[outcome] = report.by_outcome.get(outcome, 0) + n
                    report.seconds = time.monotonic() - began
                    if progress:
                        progress(report, orders)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for done in [pool.submit(work, k) for k in range(jobs)]:
            done.result()
    with psycopg.connect(conninfo(database_url)) as conn:
        _advance_sequences(conn)
    report.seconds = time.monotonic() - began
    report.analyze_seconds = vacuum_analyze(database_url)
    return report


def _write_batch(conn: psycopg.Connection[Any], plan: _Plan, first: int, last: int) -> tuple[dict[str, int], int]:
    """Orders first..last-1 of the fill (their ids, times and mix fixed by their index and the seed), in one
    transaction; returns how many of each outcome and the rows written."""
    rng = random.Random(plan.seed * 1_000_003 + first)
    w = _Writer(ORDER_SAGA, rng)
    counts: dict[str, int] = {}
    for i in range(first, last):
        book_id, title, price = plan.books[rng.randrange(len(plan.books))]
        qty = 1 if rng.random() < 0.8 else rng.randint(2, 3)
        o = _Order(plan.order_id + i, plan.saga_id + i, rng.randint(1, plan.customers), book_id, title, qty,
                   price * qty, plan.start_epoch + (i + rng.random()) * plan.step_s)
        outcome = _outcome(rng.random(), plan.mix)
        counts[outcome] = counts.get(outcome, 0) + 1
        _fill_one(w, o, outcome, plan.notification_id + i, plan.mix)  # parked orders leave a gap: as sequences do
    rows = _copy(conn, w.lines)
    conn.commit()
    return counts, rows


def _skip_foreign_key_checks(conn: psycopg.Connection[Any]) -> None:
    """The rows are consistent by construction: a superuser's session skips the foreign keys' per-row triggers
    (session_replication_role = replica), which more than doubles the rows per second; anyone else keeps them."""
    try:
        conn.execute("SET session_replication_role = replica")
        conn.commit()
    except psycopg.errors.InsufficientPrivilege:
        conn.rollback()


def _advance_sequences(conn: psycopg.Connection[Any]) -> None:
    for table, column in SEQUENCES:
        conn.execute(f"SELECT setval('{_sequence(conn, table, column)}', "
                     f"greatest((SELECT coalesce(max({column}), 0) FROM {table}), 1))")


def vacuum_analyze(database_url: str) -> float:
    """VACUUM (ANALYZE) the tables the history fills: fresh statistics for the planner, and the visibility map that
    lets counts read an index alone. Returns the seconds it took."""
    began = time.monotonic()
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        for table in COLUMNS:
            conn.execute(f"VACUUM (ANALYZE) {table}")
    return time.monotonic() - began
