"""index open steps by name

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 10:27:24.568122
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('saga_steps', schema=None) as batch_op:
        batch_op.create_index('ix_saga_steps_name_status', ['name', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('saga_steps', schema=None) as batch_op:
        batch_op.drop_index('ix_saga_steps_name_status')
