"""Faster centroid, as accurate: two-level summation (prototypes--2.sql).

Upgrade loads ``prototypes--2.sql``: ``regime_prototype_for_window`` (which
``compute_regime_prototype``, ``compute_regime_prototypes`` and
``regime_prototypes_json`` call) is replaced, same signature, result and
errors, and calls the three new functions ``regime_prototype_compute``,
``regime_prototype_compute_custom_plans`` and ``regime_window_bucket_sums``.

Downgrade drops the three new functions and puts back the definition of
``regime_prototype_for_window`` from ``prototypes--1.sql``, taken from the
released file (checked against ``sql/SHA256SUMS``) as ``CREATE OR REPLACE``.
Only that statement is re-run, not the whole file: the file's other objects
(the type, the view, the other functions) were never changed, and dropping
and re-creating them would lose the privileges granted on them
(``regime_pg.roles``) and break what later revisions build on them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from alembic import op

from regime_pg.migration_ops import released_function_definition, run_sql, run_sql_file

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: The function of prototypes--1.sql that prototypes--2.sql replaces.
REPLACED = "regime_prototype_for_window"


def v1_definition(name: str) -> str:
    """``CREATE OR REPLACE`` text of function ``name`` as prototypes--1.sql defines it."""
    return released_function_definition("prototypes--1.sql", name)


def upgrade() -> None:
    run_sql_file(op.get_bind(), "prototypes--2.sql")


def downgrade() -> None:
    conn = op.get_bind()
    run_sql(conn, v1_definition(REPLACED))
    run_sql(
        conn,
        """
        DROP FUNCTION regime_prototype_compute_custom_plans(text, text, date, date);
        DROP FUNCTION regime_prototype_compute(text, text, date, date);
        DROP FUNCTION regime_window_bucket_sums(text, date, date, integer, integer);
        """,
    )
