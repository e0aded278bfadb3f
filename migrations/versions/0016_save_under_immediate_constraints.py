"""Saving a set works under SET CONSTRAINTS ALL IMMEDIATE (prototype_sets--2.sql; F17).

Upgrade loads ``prototype_sets--2.sql``: ``regime_store_prototype_set``, through
which both save functions store, is replaced (same signature, flags and
settings) by one that writes the set row and its members in one statement.
The deferrable constraint trigger ``regime_pg_prototype_set_complete`` then
finds the members whether the caller left it deferred (checked at commit) or
made it immediate (checked at the end of that statement), and the caller's
constraint mode is never changed.  A set without members is still refused.

Downgrade puts back the definition of ``prototype_sets--1.sql``, taken from
the released file (checked against ``sql/SHA256SUMS``) as ``CREATE OR
REPLACE``, so the function keeps its privileges.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28
"""

from alembic import op

from regime_pg.migration_ops import released_function, run_sql, run_sql_file

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

#: The function of prototype_sets--1.sql that prototype_sets--2.sql replaces.
REPLACED = "regime_store_prototype_set"


def upgrade() -> None:
    run_sql_file(op.get_bind(), "prototype_sets--2.sql")


def downgrade() -> None:
    run_sql(op.get_bind(), released_function("prototype_sets--1.sql", REPLACED))
