"""Less work per window, one rounding: the centroid keeps float8 sums (prototypes--3.sql).

Upgrade loads ``prototypes--3.sql``: two aggregates over pgvector's own
functions (``regime_vector_sum_state``, ``regime_vector_state_sum``), a new
``regime_window_bucket_states`` in place of ``regime_window_bucket_sums``
(dropped), ``regime_window_parts`` and ``regime_window_distances`` (the
statements of long windows, in parallel workers), and new bodies, same
signatures, results and errors, for
``regime_prototype_compute``, ``regime_prototype_for_window`` and
``compute_regime_prototype``.

Downgrade puts back the definitions of prototypes--2.sql and prototypes--1.sql,
taken from the released files (checked against ``sql/SHA256SUMS``) as
``CREATE OR REPLACE``, so the replaced functions keep their privileges;
``regime_window_bucket_sums`` is created again (privileges granted on it
before the upgrade are not: ``regime-pg roles grant-reader`` grants them
again), and the new objects are dropped.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from alembic import op

from regime_pg.migration_ops import released_function, released_statement, run_sql, run_sql_file

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

#: Functions prototypes--3.sql replaces, with the released file that defined them before.
REPLACED = {
    "regime_prototype_compute": "prototypes--2.sql",
    "regime_prototype_for_window": "prototypes--2.sql",
    "compute_regime_prototype": "prototypes--1.sql",
}


def upgrade() -> None:
    run_sql_file(op.get_bind(), "prototypes--3.sql")


def downgrade() -> None:
    conn = op.get_bind()
    run_sql(conn, released_function("prototypes--2.sql", "regime_window_bucket_sums"))
    run_sql(
        conn,
        released_statement(
            "prototypes--2.sql", "COMMENT ON FUNCTION regime_window_bucket_sums("
        ),
    )
    for function, released in REPLACED.items():
        run_sql(conn, released_function(released, function))
    run_sql(
        conn,
        """
        DROP FUNCTION regime_window_distances(text, date, date, vector);
        DROP FUNCTION regime_window_parts(text, date, date, integer[]);
        DROP FUNCTION regime_window_bucket_states(text, date, date, integer, integer);
        DROP AGGREGATE regime_vector_state_sum(double precision[]);
        DROP AGGREGATE regime_vector_sum_state(vector);
        """,
    )
