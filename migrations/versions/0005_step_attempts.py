"""step attempts: every attempt of every provider step, for a saga's timeline

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('step_attempts',
    sa.Column('saga_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=32), nullable=False),
    sa.Column('attempt', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('task_id', sa.String(length=64), nullable=True),
    sa.Column('provider_ref', sa.String(length=64), nullable=True),
    sa.Column('outcome_unknown', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('saga_id', 'step', 'attempt', 'started_at', name=op.f('pk_step_attempts'))
    )


def downgrade() -> None:
    op.drop_table('step_attempts')
