"""A row without a vector no longer makes the stored path scan twice (bucket_sums--2.sql).

Upgrade loads ``bucket_sums--2.sql``: ``regime_window_distances_counted``
gets a new body (same signature, flags, result columns and comment) that sums
the distance units over the rows with a vector only.  Version 1 counted a
row without one as a capped distance (``least`` ignores a NULL), so the
stored path summed such a window's distances a second time; the results are
the same, bit for bit, now from one scan.

Downgrade puts back the definition of ``bucket_sums--1.sql``, taken from the
released file (checked against ``sql/SHA256SUMS``) as ``CREATE OR REPLACE``,
so the function keeps its privileges and its comment.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-26
"""

from alembic import op

from regime_pg.migration_ops import released_function, run_sql, run_sql_file

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

#: The function bucket_sums--2.sql replaces, and the released file it comes back from.
REPLACED = ("bucket_sums--1.sql", "regime_window_distances_counted")


def upgrade() -> None:
    run_sql_file(op.get_bind(), "bucket_sums--2.sql")


def downgrade() -> None:
    run_sql(op.get_bind(), released_function(*REPLACED))
