"""Idempotency-Keys scoped to the caller (the token's name), and an index of the keys still kept, for the
sweeper to forget them after IDEMPOTENCY_KEY_TTL_S

Keys stored before this revision had no caller: they are given `storefront`, the name of a storefront token
that has none (the caller of most orders), so a retry of such an order by that token still finds it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 18:30:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

KEPT = sa.text('idempotency_key IS NOT NULL')


def upgrade() -> None:
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_scope', sa.String(length=64), nullable=True))
    op.execute("UPDATE orders SET idempotency_scope = 'storefront' WHERE idempotency_key IS NOT NULL")
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_constraint('uq_orders_idempotency_key', type_='unique')
        batch_op.create_unique_constraint('uq_orders_idempotency_scope_key', ['idempotency_scope', 'idempotency_key'])
        batch_op.create_index('ix_orders_idempotency_kept', ['created_at'], unique=False,
                              postgresql_where=KEPT, sqlite_where=KEPT)


def downgrade() -> None:
    # two callers' orders may hold the same key by now: only the first of each keeps it
    op.execute("UPDATE orders SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL AND id NOT IN "
               "(SELECT min(id) FROM orders WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key)")
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_idempotency_kept', postgresql_where=KEPT, sqlite_where=KEPT)
        batch_op.drop_constraint('uq_orders_idempotency_scope_key', type_='unique')
        batch_op.create_unique_constraint('uq_orders_idempotency_key', ['idempotency_key'])
        batch_op.drop_column('idempotency_scope')
