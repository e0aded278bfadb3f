"""Long windows start parallel workers only with enough rows (prototypes--7.sql).

Upgrade loads ``prototypes--7.sql``: ``regime_prototype_for_window`` is
replaced (same signature, flags, settings, results and errors), and
``regime_window_repays_workers`` (reads the setting
``regime_pg.parallel_min_rows``, default 50000) and
``regime_prototype_compute_serial`` are added.  A window
of 4096 days or more with fewer rows than the setting is computed without
parallel workers, as is every long window while
``max_parallel_workers_per_gather`` is 0 (then nothing is probed); the
results are the same, bit for bit.

Downgrade puts back the definition of ``regime_prototype_for_window`` from
``bucket_sums--1.sql``, taken from the released file (checked against
``sql/SHA256SUMS``) as ``CREATE OR REPLACE``, so it keeps its privileges,
then drops the two new functions.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-26
"""

from alembic import op

from regime_pg.migration_ops import released_function, run_sql, run_sql_file

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

#: The function prototypes--7.sql replaces, and the released file it comes back from.
REPLACED = ("bucket_sums--1.sql", "regime_prototype_for_window")


def upgrade() -> None:
    run_sql_file(op.get_bind(), "prototypes--7.sql")


def downgrade() -> None:
    conn = op.get_bind()
    run_sql(conn, released_function(*REPLACED))
    run_sql(
        conn,
        """
        DROP FUNCTION regime_prototype_compute_serial(text, text, date, date);
        DROP FUNCTION regime_window_repays_workers(text, date, date);
        """,
    )
