"""classify_regimes for sets of more than 50 prototypes (classify--3.sql).

Upgrade loads ``classify--3.sql``: ``regime_classify_query`` is replaced, same
signature and flags.  The distances column of the statement it writes was one
``jsonb_build_object`` with two arguments per prototype, so ``classify_regimes``
failed (SQLSTATE 54023, more than 100 arguments) for a set of 51 or more
prototypes; it now builds that jsonb 50 pairs at a time, joined with ``||``:
the same value as version 1.  Up to 50 prototypes the statement is that of
``classify--2.sql``, character for character.

Downgrade puts back the definition of ``regime_classify_query`` from
``classify--2.sql``, taken from the released file (checked against
``sql/SHA256SUMS``) as ``CREATE OR REPLACE``: only that statement is re-run,
so the function keeps its privileges (``regime_pg.roles``) and the file's other
functions are not touched.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from alembic import op

from regime_pg.migration_ops import released_function, run_sql, run_sql_file

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

#: The function of classify--2.sql that classify--3.sql replaces.
REPLACED = "regime_classify_query"


def upgrade() -> None:
    run_sql_file(op.get_bind(), "classify--3.sql")


def downgrade() -> None:
    run_sql(op.get_bind(), released_function("classify--2.sql", REPLACED))
