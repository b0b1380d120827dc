"""step outcome unknown

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 10:55:06.897876
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('saga_steps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outcome_unknown', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('saga_steps', schema=None) as batch_op:
        batch_op.drop_column('outcome_unknown')
