"""Backfill embedding_vector from the BYTEA of existing rows, in committed batches.

Resumable: a stopped backfill keeps its committed batches, and the next
``regime-pg migrate`` converts the rows still missing their vector.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from alembic import op

from regime_pg.migration_ops import backfill_embedding_vectors

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        backfill_embedding_vectors(op.get_bind())


def downgrade() -> None:
    # The vectors go with the column when 0004 is downgraded.
    pass
