"""The dispersion's scan computes each row's distance once (prototypes--8.sql).

Upgrade loads ``prototypes--8.sql``: ``regime_window_distances`` gets a new
body (same signature, flags, comment and results, bit for bit) that sums
each row's distance, computed once and capped at 2^31 - 1, in exact units
of 2^-32, and runs version 5's statement only for a window whose distances
add up to 2^31 - 1 or more.

Downgrade puts back the definition of ``prototypes--5.sql``, taken from the
released file (checked against ``sql/SHA256SUMS``) as ``CREATE OR REPLACE``,
so the function keeps its privileges and its comment.

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-26
"""

from alembic import op

from regime_pg.migration_ops import released_function, run_sql, run_sql_file

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

#: The function prototypes--8.sql replaces, and the released file it comes back from.
REPLACED = ("prototypes--5.sql", "regime_window_distances")


def upgrade() -> None:
    run_sql_file(op.get_bind(), "prototypes--8.sql")


def downgrade() -> None:
    run_sql(op.get_bind(), released_function(*REPLACED))
