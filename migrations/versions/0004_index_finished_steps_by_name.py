"""index finished steps by name, for admission control's recent payment rate

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 00:20:00.000000
"""
from __future__ import annotations

from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('saga_steps', schema=None) as batch_op:
        batch_op.create_index('ix_saga_steps_name_finished', ['name', 'finished_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('saga_steps', schema=None) as batch_op:
        batch_op.drop_index('ix_saga_steps_name_finished')
