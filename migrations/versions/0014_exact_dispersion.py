"""The dispersion is summed exactly, whatever the plan (prototypes--5.sql).

Upgrade loads ``prototypes--5.sql``: new bodies, same signatures, flags and
comments, for ``regime_window_distances`` and ``regime_prototype_compute``,
which now sum the distances to the centre in integer units of 2^-32 (exact,
so the same bits for an index scan, a sequential scan or parallel workers)
and round that sum once.  Centres do not change.

Downgrade puts back the definitions of ``prototypes--3.sql``, taken from the
released file (checked against ``sql/SHA256SUMS``) as ``CREATE OR REPLACE``,
so the functions keep their privileges and their comments.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""

from alembic import op

from regime_pg.migration_ops import released_function, run_sql, run_sql_file

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: The functions of prototypes--3.sql that prototypes--5.sql replaces.
REPLACED = ("regime_window_distances", "regime_prototype_compute")


def upgrade() -> None:
    run_sql_file(op.get_bind(), "prototypes--5.sql")


def downgrade() -> None:
    for function in REPLACED:
        run_sql(op.get_bind(), released_function("prototypes--3.sql", function))
