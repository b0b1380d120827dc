"""support: the audit log and bulk action plans

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 16:00:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'audit_log',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(length=100), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('saga_id', sa.Integer(), nullable=True),
        sa.Column('step', sa.String(length=32), nullable=True),
        sa.Column('bulk_token', sa.String(length=64), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('state_before', sa.String(length=64), nullable=True),
        sa.Column('state_after', sa.String(length=64), nullable=True),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')),
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_saga_id'), ['saga_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_bulk_token'), ['bulk_token'], unique=False)
    op.create_table(
        'bulk_plans',
        sa.Column('token', sa.String(length=64), nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('step', sa.String(length=32), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('filter', sa.Text(), nullable=False),
        sa.Column('sagas', sa.Text(), nullable=False),
        sa.Column('total', sa.Integer(), nullable=False),
        sa.Column('cursor', sa.Integer(), nullable=False),
        sa.Column('touched', sa.Integer(), nullable=False),
        sa.Column('skipped', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('token', name=op.f('pk_bulk_plans')),
    )


def downgrade() -> None:
    op.drop_table('bulk_plans')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_bulk_token'))
        batch_op.drop_index(batch_op.f('ix_audit_log_saga_id'))
    op.drop_table('audit_log')
