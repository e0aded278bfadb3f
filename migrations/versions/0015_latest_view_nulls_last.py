"""A NULL created_at never wins the dedup (prototypes--6.sql; finding F16).

Upgrade loads ``prototypes--6.sql``: the view ``regime_embeddings_latest`` is
replaced (``CREATE OR REPLACE VIEW``: same columns, ``security_invoker``,
comment and privileges) with ``created_at DESC NULLS LAST``, so of several
rows of one ``(region, as_of_date)`` the latest dated one wins, and a row
without ``created_at`` only over others without it (ties, as before: the
greatest ``regime_record_id``).  Every function reads duplicates through the
view, so prototypes, classification, the temperature fit and the centroid
series follow; their definitions do not change.

Downgrade puts back the view of ``prototypes--1.sql``, taken from the
released file (checked against ``sql/SHA256SUMS``) as ``CREATE OR REPLACE
VIEW``, so the view keeps its privileges and its comment.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28
"""

from alembic import op

from regime_pg.migration_ops import released_view, run_sql, run_sql_file

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

#: The view of prototypes--1.sql that prototypes--6.sql replaces.
REPLACED = "regime_embeddings_latest"


def upgrade() -> None:
    run_sql_file(op.get_bind(), "prototypes--6.sql")


def downgrade() -> None:
    run_sql(op.get_bind(), released_view("prototypes--1.sql", REPLACED))
