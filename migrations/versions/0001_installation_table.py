"""Bookkeeping table: what regime-pg created, read by its downgrades.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from alembic import op

from regime_pg.migration_ops import run_sql, run_sql_file

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(op.get_bind(), "regime_pg_installation--1.sql")


def downgrade() -> None:
    run_sql(op.get_bind(), "DROP TABLE regime_pg_installation")
