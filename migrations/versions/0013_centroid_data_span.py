"""The centroid's cost follows the window's rows, not its span (prototypes--4.sql).

Upgrade loads ``prototypes--4.sql``: a new body, same signature, flags,
comment and results, for ``regime_window_bucket_states``, which now visits
only the 15-day buckets from the window's first row to its last (two index
probes find them) instead of every bucket of the calendar window.

Downgrade puts back the definition of ``prototypes--3.sql``, taken from the
released file (checked against ``sql/SHA256SUMS``) as ``CREATE OR REPLACE``,
so the function keeps its privileges and its comment.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26
"""

from alembic import op

from regime_pg.migration_ops import released_function, run_sql, run_sql_file

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

#: The function of prototypes--3.sql that prototypes--4.sql replaces.
REPLACED = "regime_window_bucket_states"


def upgrade() -> None:
    run_sql_file(op.get_bind(), "prototypes--4.sql")


def downgrade() -> None:
    run_sql(op.get_bind(), released_function("prototypes--3.sql", REPLACED))
