"""Prototype functions: compute_regime_prototype(s), regime_prototypes_json.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from alembic import op

from regime_pg.migration_ops import run_sql, run_sql_file

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(op.get_bind(), "prototypes--1.sql")


def downgrade() -> None:
    run_sql(
        op.get_bind(),
        """
        DROP FUNCTION regime_prototypes_json(text, jsonb);
        DROP FUNCTION compute_regime_prototypes(text, jsonb);
        DROP FUNCTION regime_windows_from_json(jsonb);
        DROP FUNCTION compute_regime_prototype(text, date, date);
        DROP FUNCTION regime_prototype_for_window(text, text, date, date);
        DROP FUNCTION regime_check_window(text, text, date, date);
        DROP FUNCTION regime_window_name(text, text);
        DROP FUNCTION regime_check_region(text);
        DROP FUNCTION regime_label_is_valid(text);
        DROP VIEW regime_embeddings_latest;
        DROP TYPE regime_prototype;
        """,
    )
