"""The database schema (SQLAlchemy Core). Alembic's migrations create exactly this."""
from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)



class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores naive text; we store and read UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


Time = UtcDateTime()

books = sa.Table(
    "books",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("price_cents", sa.Integer, nullable=False),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("book_id", sa.Integer, sa.ForeignKey("books.id"), nullable=False),
    sa.Column("qty", sa.Integer, nullable=False),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("idempotency_key", sa.String(200)),
    # whose key it is: the name of the token that placed the order (two callers' keys never meet)
    sa.Column("idempotency_scope", sa.String(64)),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.UniqueConstraint("idempotency_scope", "idempotency_key", name="uq_orders_idempotency_scope_key"),
)
# The keys still kept, oldest first, for the sweeper to forget past IDEMPOTENCY_KEY_TTL_S; a forgotten key leaves
# the index, so it holds one TTL's keyed orders.
_KEPT = orders.c.idempotency_key.is_not(None)
sa.Index("ix_orders_idempotency_kept", orders.c.created_at, postgresql_where=_KEPT, sqlite_where=_KEPT)

sagas = sa.Table(
    "sagas",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("reason", sa.Text),
    sa.Column("recoveries", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("finished_at", Time),
)



def status_in(column: sa.Column[str], *statuses: str) -> sa.ColumnElement[bool]:
    """`status IN ('A', 'B')` with the values written into the SQL: a partial index's predicate, which the planner
    matches against a query's own literal values (queries that use these indexes write their statuses the same way)."""
    assert all(status.isidentifier() for status in statuses), statuses
    return column.in_([sa.literal_column(f"'{status}'") for status in statuses])


# The states a saga or step leaves on its own, and the parked FAILED sagas support resolves: the history of ended
# ones grows for ever, these stay as many as there are sagas in flight. Partial indexes on them keep the sweeper, the
# metrics scrape and the support search reading these rows only, however long the history.
ACTIVE_SAGA_STATES = ("RUNNING", "COMPENSATING", "FAILED")
OPEN_STEP_STATES = ("PENDING", "WAITING")
RUNNING_STEP = "RUNNING"

# Scrape-time counts of the sagas not ended (active, parked) read this index alone, never the ended ones.
_ACTIVE_SAGA = status_in(sagas.c.status, *ACTIVE_SAGA_STATES)
sa.Index("ix_sagas_active", sagas.c.status, sagas.c.kind, postgresql_where=_ACTIVE_SAGA, sqlite_where=_ACTIVE_SAGA)
# The support search, newest first, by any status (the ended ones too); a count over it stops at a bound.
sa.Index("ix_sagas_status_id", sagas.c.status, sagas.c.id)

saga_steps = sa.Table(
    "saga_steps",
    metadata,
    sa.Column("saga_id", sa.Integer, sa.ForeignKey("sagas.id"), primary_key=True),
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("task_id", sa.String(64)),
    sa.Column("provider_ref", sa.String(64)),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("started_at", Time),
    sa.Column("finished_at", Time),
    sa.Column("lease_until", Time),
    # The step's outbox: a PENDING or WAITING step due at available_at and not yet dispatched needs a message.
    sa.Column("available_at", Time),
    sa.Column("dispatched_at", Time),
    sa.Column("waited_s", sa.Float, nullable=False, default=0.0),
    # An attempt may have taken effect at the provider (its answer was lost); only a definite answer clears it.
    sa.Column("outcome_unknown", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
)
# The step outbox (due and unsent steps) and the steps waiting for their provider: the sweeper and the scrape.
_OPEN_STEP = status_in(saga_steps.c.status, *OPEN_STEP_STATES)
sa.Index("ix_saga_steps_open_due", saga_steps.c.status, saga_steps.c.available_at,
         postgresql_where=_OPEN_STEP, sqlite_where=_OPEN_STEP)
# Steps RUNNING past their lease (the sweeper takes them back, the scrape counts them).
_RUNNING = status_in(saga_steps.c.status, RUNNING_STEP)
sa.Index("ix_saga_steps_running_lease", saga_steps.c.lease_until, postgresql_where=_RUNNING, sqlite_where=_RUNNING)
# Open steps by name (admission counts the payments in flight): a full index, whose (name, status) ranges of the
# open states hold only steps in flight. Not partial: a partial one on the open states was the planner's pick for
# the sweeper's statements too when the statistics see no open step (as after ANALYZE on a long history).
sa.Index("ix_saga_steps_name_status", saga_steps.c.name, saga_steps.c.status)
# Failed steps by name, newest saga first: the support search by failing step.
_FAILED_STEP = status_in(saga_steps.c.status, "FAILED")
sa.Index("ix_saga_steps_failed_by_name", saga_steps.c.name, saga_steps.c.saga_id,
         postgresql_where=_FAILED_STEP, sqlite_where=_FAILED_STEP)
sa.Index("ix_saga_steps_name_finished", saga_steps.c.name, saga_steps.c.finished_at)

# Every attempt of a provider step, written by the statement that closes it (a local step's row is its only
# attempt). A BLOCKED attempt gives its number back, so the number comes again with a later started_at. The key
# leads with saga_id: it is also the index that reads one saga's attempts. No foreign key: the row comes from the
# step row's own UPDATE, and the check would cost the hot path a lookup.
step_attempts = sa.Table(
    "step_attempts",
    metadata,
    sa.Column("saga_id", sa.Integer, primary_key=True),
    sa.Column("step", sa.String(32), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("started_at", Time, primary_key=True),
    sa.Column("finished_at", Time, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("task_id", sa.String(64)),
    sa.Column("provider_ref", sa.String(64)),
    sa.Column("outcome_unknown", sa.Boolean, nullable=False),
)

# Retention (`bookmarket retention run`, RETENTION_DAYS): the finished sagas (COMPLETED, COMPENSATED) that retention
# looks for, oldest first. Partial: only finished sagas still in `sagas` are in it, so the search never reads active
# or parked ones and the index stays as small as what RETENTION_DAYS keeps.
_FINISHED = sagas.c.status.in_(("COMPLETED", "COMPENSATED"))
sa.Index("ix_sagas_finished_retention", sagas.c.finished_at, postgresql_where=_FINISHED, sqlite_where=_FINISHED)

# Where retention moves a finished saga: its row always (the order keeps its sagas: GET /orders/<id> lists them and a
# later cancel of a shipped order needs to know its saga completed), its steps and attempts only with
# RETENTION_MODE=archive (RETENTION_MODE=delete removes those). No foreign keys: a move is plain inserts, and nothing
# writes to these tables but retention.
sagas_archive = sa.Table(
    "sagas_archive",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("order_id", sa.Integer, nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("recoveries", sa.Integer, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("finished_at", Time),
    sa.Column("archived_at", Time, nullable=False),
    sa.Column("steps_kept", sa.Boolean, nullable=False),  # False: RETENTION_MODE=delete removed steps and attempts
)

saga_steps_archive = sa.Table(
    "saga_steps_archive",
    metadata,
    *(sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, autoincrement=False)
      for c in saga_steps.columns),
)

step_attempts_archive = sa.Table(
    "step_attempts_archive",
    metadata,
    *(sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, autoincrement=False)
      for c in step_attempts.columns),
)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("charge_ref", sa.String(64)),
    sa.Column("refund_ref", sa.String(64)),
    sa.Column("updated_at", Time, nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("shipment_ref", sa.String(64)),
    sa.Column("cancel_ref", sa.String(64)),
    sa.Column("updated_at", Time, nullable=False),
)

# Read model for staff: every message to a customer and how it went.
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False),
    sa.Column("saga_id", sa.Integer, nullable=False),
    sa.Column("step", sa.String(32), nullable=False),
    sa.Column("customer_id", sa.Integer, nullable=False, index=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("message_ref", sa.String(64)),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.UniqueConstraint("saga_id", "step", name="uq_notifications_saga_step"),
)

# Read model for customers ("my page"): one row per order, kept current by the saga.
customer_orders = sa.Table(
    "customer_orders",
    metadata,
    sa.Column("order_id", sa.Integer, primary_key=True),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("book_id", sa.Integer, nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("qty", sa.Integer, nullable=False),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("saga_id", sa.Integer),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)
sa.Index("ix_customer_orders_customer_created", customer_orders.c.customer_id, customer_orders.c.order_id.desc())

# Every support action, single or bulk: who, when, what, why, and the saga's state before and after. Written in the
# action's own transaction; the API only ever reads it.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", Time, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("saga_id", sa.Integer, index=True),
    sa.Column("step", sa.String(32)),
    sa.Column("bulk_token", sa.String(64), index=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("state_before", sa.String(64)),
    sa.Column("state_after", sa.String(64)),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text),
)

# A bulk action's dry run: exactly which sagas, in which state; the real run takes its token and works through
# `sagas` in batches from `cursor`.
bulk_plans = sa.Table(
    "bulk_plans",
    metadata,
    sa.Column("token", sa.String(64), primary_key=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("step", sa.String(32)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("filter", sa.Text, nullable=False),
    sa.Column("sagas", sa.Text, nullable=False),  # JSON [[saga_id, "STATE"], ...], newest first
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("cursor", sa.Integer, nullable=False, default=0),
    sa.Column("touched", sa.Integer, nullable=False, default=0),
    sa.Column("skipped", sa.Integer, nullable=False, default=0),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)
