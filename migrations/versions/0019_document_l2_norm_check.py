"""Importing a prototype document checks each l2_norm against its centre (prototype_sets--3.sql).

Upgrade loads ``prototype_sets--3.sql``: ``save_regime_prototype_set_from_document``
is replaced (same signature, flags and settings; its comment and privileges
stay) by one that refuses, with data_exception (22000) naming the prototype
and nothing written, a document whose ``l2_norm`` is not the norm of its
centre, with the tolerance of the client's ``check_l2_norms`` (relative
``embedding_dim * 2**-24``, absolute ``sqrt(embedding_dim * 2**-149)``), so
a psql import accepts what ``regime-pg sets import`` accepts.  A document
without ``l2_norm``, and every document regime-pg exports, imports as before.

Downgrade puts back the definition of ``prototype_sets--1.sql``, taken from
the released file (checked against ``sql/SHA256SUMS``) as ``CREATE OR
REPLACE``, so the function keeps its privileges.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-29
"""

from alembic import op

from regime_pg.migration_ops import released_function, run_sql, run_sql_file

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

#: The function of prototype_sets--1.sql that prototype_sets--3.sql replaces.
REPLACED = "save_regime_prototype_set_from_document"


def upgrade() -> None:
    run_sql_file(op.get_bind(), "prototype_sets--3.sql")


def downgrade() -> None:
    run_sql(op.get_bind(), released_function("prototype_sets--1.sql", REPLACED))
