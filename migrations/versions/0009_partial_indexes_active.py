"""partial indexes on the active states: the sweeper, the metrics scrape and the support search read the sagas and
steps in flight (and the parked ones), never the history of ended ones

Replaces ix_sagas_status_kind and ix_saga_steps_due (full indexes over every saga and step ever) with partial ones,
and adds the support search's indexes: sagas by (status, id) for newest first by any status, and failed steps by
(name, saga_id) for the search by failing step. ix_saga_steps_name_status stays (admission's count by name).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 21:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

ACTIVE_SAGA = sa.text("status IN ('RUNNING', 'COMPENSATING', 'FAILED')")
OPEN_STEP = sa.text("status IN ('PENDING', 'WAITING')")
RUNNING = sa.text("status IN ('RUNNING')")
FAILED_STEP = sa.text("status IN ('FAILED')")


def _where(predicate: sa.TextClause) -> dict[str, sa.TextClause]:
    return {"postgresql_where": predicate, "sqlite_where": predicate}


def upgrade() -> None:
    with op.batch_alter_table('sagas', schema=None) as batch_op:
        batch_op.create_index('ix_sagas_active', ['status', 'kind'], unique=False, **_where(ACTIVE_SAGA))
        batch_op.create_index('ix_sagas_status_id', ['status', 'id'], unique=False)
        batch_op.drop_index('ix_sagas_status_kind')
    with op.batch_alter_table('saga_steps', schema=None) as batch_op:
        batch_op.create_index('ix_saga_steps_open_due', ['status', 'available_at'], unique=False, **_where(OPEN_STEP))
        batch_op.create_index('ix_saga_steps_running_lease', ['lease_until'], unique=False, **_where(RUNNING))
        batch_op.create_index('ix_saga_steps_failed_by_name', ['name', 'saga_id'], unique=False,
                              **_where(FAILED_STEP))
        batch_op.drop_index('ix_saga_steps_due')


def downgrade() -> None:
    with op.batch_alter_table('saga_steps', schema=None) as batch_op:
        batch_op.create_index('ix_saga_steps_due', ['status', 'available_at'], unique=False)
        batch_op.drop_index('ix_saga_steps_failed_by_name', **_where(FAILED_STEP))
        batch_op.drop_index('ix_saga_steps_running_lease', **_where(RUNNING))
        batch_op.drop_index('ix_saga_steps_open_due', **_where(OPEN_STEP))
    with op.batch_alter_table('sagas', schema=None) as batch_op:
        batch_op.create_index('ix_sagas_status_kind', ['status', 'kind'], unique=False)
        batch_op.drop_index('ix_sagas_status_id')
        batch_op.drop_index('ix_sagas_active', **_where(ACTIVE_SAGA))
