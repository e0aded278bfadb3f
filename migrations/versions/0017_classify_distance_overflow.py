"""Distances that overflow float32 are one error in every classify function (classify--4.sql; F18).

Upgrade loads ``classify--4.sql``: the new ``regime_distance_overflow`` raises
numeric_value_out_of_range (22003) naming the overflow and the embedding;
``classify_regime`` (was ``classify--1.sql``'s, "division by zero") and
``regime_classify_query`` (was ``classify--3.sql``'s: the statement of
``classify_regimes`` and ``classify_regime_labels``, confidence NaN) are
replaced, same signatures, flags and settings, and call it when an
embedding's nearest distance is infinite.  Every other result is unchanged,
bit for bit.

Downgrade puts back the definitions of ``classify_regime`` from
``classify--1.sql`` and ``regime_classify_query`` from ``classify--3.sql``,
taken from the released files (checked against ``sql/SHA256SUMS``) as
``CREATE OR REPLACE``, so both keep their privileges, then drops
``regime_distance_overflow``.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28
"""

from alembic import op

from regime_pg.migration_ops import released_function, run_sql, run_sql_file

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

#: The functions classify--4.sql replaces, and the released file each comes back from.
REPLACED = (("classify--1.sql", "classify_regime"), ("classify--3.sql", "regime_classify_query"))


def upgrade() -> None:
    run_sql_file(op.get_bind(), "classify--4.sql")


def downgrade() -> None:
    conn = op.get_bind()
    for name, function in REPLACED:
        run_sql(conn, released_function(name, function))
    run_sql(conn, "DROP FUNCTION regime_distance_overflow(text, date, text);")
