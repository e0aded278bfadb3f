"""Stored bucket sums, an opt-in accelerator of the centroid (bucket_sums--1.sql).

Upgrade loads ``bucket_sums--1.sql``: two tables (``regime_bucket_sums``,
``regime_bucket_group_sums``), the functions that fill, keep and read them,
and ``regime_bucket_sums_enable()`` / ``regime_bucket_sums_disable()``.
``regime_prototype_for_window`` is replaced (same signature, results and
errors): while the sums are enabled it computes centroids on the calendar
grid, from the stored sums.  Nothing is enabled by the upgrade: no trigger is
added to ``regimes`` until ``regime_bucket_sums_enable()`` is called, and
until then every result is the same as before.

Downgrade drops the four triggers from ``regimes`` if they are there (first
taking its lock the way 0004 does, ``lock_regimes_for_ddl``, so the engine's
inserts never queue behind a DROP TRIGGER that waits), then the new functions
and tables (their content is derived from ``regimes``), and puts back the
definition of ``regime_prototype_for_window`` from ``prototypes--3.sql``,
taken from the released file (checked against ``sql/SHA256SUMS``) as
``CREATE OR REPLACE``, so it keeps its privileges.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-26
"""

from alembic import op

from regime_pg.migration_ops import (
    fetch_value,
    lock_regimes_for_ddl,
    released_function,
    run_sql,
    run_sql_file,
    set_object_search_path,
)

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

#: The function of prototypes--3.sql that bucket_sums--1.sql replaces.
REPLACED = "regime_prototype_for_window"

#: Whether any trigger of regime_bucket_sums_enable() is on regimes (enabled or not).
TRIGGERS_PRESENT = """
    SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger AS t
                    WHERE t.tgrelid = 'regimes'::regclass
                      AND t.tgname IN ('regime_pg_bucket_sums_insert',
                                       'regime_pg_bucket_sums_update',
                                       'regime_pg_bucket_sums_delete',
                                       'regime_pg_bucket_sums_truncate'))
"""


def upgrade() -> None:
    run_sql_file(op.get_bind(), "bucket_sums--1.sql")


def downgrade() -> None:
    conn = op.get_bind()
    set_object_search_path(conn)
    if fetch_value(conn, TRIGGERS_PRESENT):
        lock_regimes_for_ddl(conn)
        run_sql(conn, "SELECT regime_bucket_sums_disable()")
    run_sql(conn, released_function("prototypes--3.sql", REPLACED))
    run_sql(
        conn,
        """
        DROP FUNCTION regime_bucket_sums_disable();
        DROP FUNCTION regime_bucket_sums_enable();
        DROP FUNCTION regime_bucket_sums_truncated();
        DROP FUNCTION regime_bucket_sums_changed();
        DROP FUNCTION regime_bucket_sums_refresh(text[], integer[]);
        DROP FUNCTION regime_prototype_from_bucket_sums_custom_plans(text, text, date, date);
        DROP FUNCTION regime_prototype_from_bucket_sums(text, text, date, date);
        DROP FUNCTION regime_bucket_sums_enabled();
        DROP FUNCTION regime_window_distances_counted(text, date, date, vector);
        DROP FUNCTION regime_calendar_grid_state(text, date, date, boolean);
        DROP FUNCTION regime_stored_group_sums(text, integer, integer);
        DROP FUNCTION regime_stored_bucket_sums(text, integer, integer, integer, integer);
        DROP FUNCTION regime_bucket_sums_of_rows(text, date, date);
        DROP FUNCTION regime_bucket_first_day(integer);
        DROP TABLE regime_bucket_group_sums;
        DROP TABLE regime_bucket_sums;
        """,
    )
