"""Classification with a saved prototype set: classify_regime(s), regime_centroid_series.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from alembic import op

from regime_pg.migration_ops import run_sql, run_sql_file

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(op.get_bind(), "classify--1.sql")


def downgrade() -> None:
    run_sql(
        op.get_bind(),
        """
        DROP FUNCTION regime_centroid_series(text, date, date, integer, text);
        DROP FUNCTION classify_regimes(text, date, date, text, integer);
        DROP FUNCTION classify_regime(vector, text);
        DROP FUNCTION regime_classification(text[], double precision[], double precision);
        DROP FUNCTION regime_check_date_count(integer, text);
        DROP FUNCTION regime_check_prototype_set_region(regime_prototype_sets, text);
        """,
    )
