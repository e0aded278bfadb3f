"""pgvector: installed when missing and allowed, else a clear error.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from alembic import op

from regime_pg.migration_ops import ensure_pgvector, forget, record, recorded, run_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if ensure_pgvector(conn):
        record(conn, "created_vector_extension", "true")


def downgrade() -> None:
    conn = op.get_bind()
    if recorded(conn, "created_vector_extension") == "true":
        # RESTRICT: if anything else came to use pgvector meanwhile, this fails
        # rather than dropping what is not ours.
        run_sql(conn, "DROP EXTENSION vector RESTRICT")
        forget(conn, "created_vector_extension")
