"""regimes.embedding_vector (vector(384), PLAIN storage) kept in sync by a trigger.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from alembic import op

from regime_pg.migration_ops import lock_regimes_for_ddl, run_sql, run_sql_file

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ALTER TABLE and CREATE TRIGGER need regimes to themselves: ask with a short
    # lock_timeout and retry, so the engine's inserts never queue behind a long wait.
    lock_regimes_for_ddl(op.get_bind())
    run_sql_file(op.get_bind(), "embedding_vector--1.sql")


def downgrade() -> None:
    lock_regimes_for_ddl(op.get_bind())
    run_sql(
        op.get_bind(),
        """
        DROP TRIGGER regime_pg_embedding_sync ON regimes;
        ALTER TABLE regimes DROP COLUMN embedding_vector;
        DROP FUNCTION regime_embedding_sync();
        DROP FUNCTION regime_embedding_to_vector(bytea);
        DROP FUNCTION regime_embedding_convert(bytea);
        DROP FUNCTION regime_float32le_decode(bytea);
        DROP FUNCTION regime_embedding_dim();
        """,
    )
