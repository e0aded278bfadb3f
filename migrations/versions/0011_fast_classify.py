"""Faster classify_regimes, same results: one set-based statement (classify--2.sql).

Upgrade loads ``classify--2.sql``: ``classify_regimes`` is replaced, same
signature, result columns, values, order and errors, and runs the statement
that the new function ``regime_classify_query`` writes for the set's number
of prototypes (``regime_classify_prepare`` runs the checks and reads the
set); ``classify_regime_labels`` is new: the same rows without the distances.

Downgrade drops the three new functions and puts back the definition of
``classify_regimes`` from ``classify--1.sql``, taken from the released file
(checked against ``sql/SHA256SUMS``) as ``CREATE OR REPLACE``.  Only that
statement is re-run, not the whole file: the file's other functions were never
changed, and dropping and re-creating them would lose the privileges granted
on them (``regime_pg.roles``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

from alembic import op

from regime_pg.migration_ops import released_function, run_sql, run_sql_file

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: The function of classify--1.sql that classify--2.sql replaces.
REPLACED = "classify_regimes"


def upgrade() -> None:
    run_sql_file(op.get_bind(), "classify--2.sql")


def downgrade() -> None:
    conn = op.get_bind()
    run_sql(conn, released_function("classify--1.sql", REPLACED))
    run_sql(
        conn,
        """
        DROP FUNCTION classify_regime_labels(text, date, date, text, integer);
        DROP FUNCTION regime_classify_prepare(text, date, date, text, integer, boolean);
        DROP FUNCTION regime_classify_query(integer, integer[], boolean, boolean, boolean);
        """,
    )
