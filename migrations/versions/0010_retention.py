"""Retention: the archive of finished sagas (their row; steps and attempts with RETENTION_MODE=archive) and a
partial index of the finished sagas still in `sagas`, oldest first, for `bookmarket retention run`

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 21:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

FINISHED = sa.text("status IN ('COMPLETED', 'COMPENSATED')")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'sagas_archive',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('cancel_requested', sa.Boolean(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('recoveries', sa.Integer(), nullable=False),
        sa.Column('created_at', Time, nullable=False),
        sa.Column('updated_at', Time, nullable=False),
        sa.Column('finished_at', Time, nullable=True),
        sa.Column('archived_at', Time, nullable=False),
        sa.Column('steps_kept', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sagas_archive')),
    )
    op.create_index(op.f('ix_sagas_archive_order_id'), 'sagas_archive', ['order_id'], unique=False)
    op.create_table(
        'saga_steps_archive',
        sa.Column('saga_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('name', sa.String(length=32), autoincrement=False, nullable=False),
        sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('status', sa.String(length=16), autoincrement=False, nullable=False),
        sa.Column('attempts', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('max_attempts', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('error', sa.Text(), autoincrement=False, nullable=True),
        sa.Column('task_id', sa.String(length=64), autoincrement=False, nullable=True),
        sa.Column('provider_ref', sa.String(length=64), autoincrement=False, nullable=True),
        sa.Column('created_at', Time, autoincrement=False, nullable=False),
        sa.Column('started_at', Time, autoincrement=False, nullable=True),
        sa.Column('finished_at', Time, autoincrement=False, nullable=True),
        sa.Column('lease_until', Time, autoincrement=False, nullable=True),
        sa.Column('available_at', Time, autoincrement=False, nullable=True),
        sa.Column('dispatched_at', Time, autoincrement=False, nullable=True),
        sa.Column('waited_s', sa.Float(), autoincrement=False, nullable=False),
        sa.Column('outcome_unknown', sa.Boolean(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint('saga_id', 'name', name=op.f('pk_saga_steps_archive')),
    )
    op.create_table(
        'step_attempts_archive',
        sa.Column('saga_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('step', sa.String(length=32), autoincrement=False, nullable=False),
        sa.Column('attempt', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('started_at', Time, autoincrement=False, nullable=False),
        sa.Column('finished_at', Time, autoincrement=False, nullable=False),
        sa.Column('outcome', sa.String(length=16), autoincrement=False, nullable=False),
        sa.Column('error', sa.Text(), autoincrement=False, nullable=True),
        sa.Column('task_id', sa.String(length=64), autoincrement=False, nullable=True),
        sa.Column('provider_ref', sa.String(length=64), autoincrement=False, nullable=True),
        sa.Column('outcome_unknown', sa.Boolean(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint('saga_id', 'step', 'attempt', 'started_at', name=op.f('pk_step_attempts_archive')),
    )
    with op.batch_alter_table('sagas', schema=None) as batch_op:
        batch_op.create_index('ix_sagas_finished_retention', ['finished_at'], unique=False,
                              postgresql_where=FINISHED, sqlite_where=FINISHED)


def downgrade() -> None:
    with op.batch_alter_table('sagas', schema=None) as batch_op:
        batch_op.drop_index('ix_sagas_finished_retention', postgresql_where=FINISHED, sqlite_where=FINISHED)
    op.drop_table('step_attempts_archive')
    op.drop_table('saga_steps_archive')
    op.drop_index(op.f('ix_sagas_archive_order_id'), table_name='sagas_archive')
    op.drop_table('sagas_archive')
