"""The engine's regimes table: checked when present, created when missing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

from regime_pg.errors import MigrationError
from regime_pg.migration_ops import (
    fetch_value,
    forget,
    record,
    recorded,
    regimes_shape_problems,
    run_sql,
    run_sql_file,
)

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if fetch_value(conn, "SELECT to_regclass('regimes')") is None:
        run_sql_file(conn, "regimes--1.sql")
        record(conn, "created_regimes_table", "true")
        return
    problems = regimes_shape_problems(conn)
    if problems:
        raise MigrationError(
            "the existing regimes table is not the Regime Engine's: " + "; ".join(problems)
        )


def downgrade() -> None:
    conn = op.get_bind()
    if recorded(conn, "created_regimes_table") == "true":
        run_sql(conn, "DROP TABLE regimes")
        forget(conn, "created_regimes_table")
