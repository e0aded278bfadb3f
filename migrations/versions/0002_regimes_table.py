"""The engine's regimes table: checked when present, created when missing.

An existing table without an index on ``(region, as_of_date)`` is accepted
with a warning: every window would then scan the whole table.

Downgrade drops the table only when regime-pg created it and it is empty: rows
in it are the engine's, and stay (the table is then the engine's, as if it had
created it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

from regime_pg.errors import MigrationError
from regime_pg.migration_ops import (
    fetch_value,
    forget,
    log,
    record,
    recorded,
    regimes_index_missing,
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
    if regimes_index_missing(conn):
        log.warning(
            "regimes has no index on (region, as_of_date): every prototype window will scan "
            "the whole table; the engine's own schema has ix_regimes_region_date"
        )


def downgrade() -> None:
    conn = op.get_bind()
    if recorded(conn, "created_regimes_table") == "true":
        rows = fetch_value(conn, "SELECT count(*) FROM (SELECT FROM regimes LIMIT 1) AS r")
        if rows == 0:
            run_sql(conn, "DROP TABLE regimes")
        else:
            log.warning("regimes holds the engine's rows: the table stays")
        forget(conn, "created_regimes_table")
