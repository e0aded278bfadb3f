"""Stored prototype sets: tables, immutability triggers, save/import/export/delete, temperature fit.

Downgrade refuses while a set is stored: sets are users' calibrations, and
dropping their tables would lose them.  Export what should be kept
(``regime-pg sets export NAME``), delete the sets, then downgrade.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from typing import cast

from alembic import op

from regime_pg.errors import MigrationError
from regime_pg.migration_ops import fetch_value, run_sql, run_sql_file

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file(op.get_bind(), "prototype_sets--1.sql")


def downgrade() -> None:
    conn = op.get_bind()
    stored = fetch_value(
        conn,
        "SELECT array_agg(name ORDER BY name) FROM (SELECT name FROM regime_prototype_sets"
        " ORDER BY name LIMIT 6) AS s",
    )
    if stored:
        names = [str(name) for name in cast(list[object], stored)]
        shown = ", ".join(repr(name[:40]) for name in names[:5])
        raise MigrationError(
            f"prototype sets are stored ({shown}{', ...' if len(names) > 5 else ''}): a "
            "downgrade below 0007 would drop them; export the ones to keep "
            "(regime-pg sets export NAME), delete them (regime-pg sets delete NAME), "
            "then downgrade"
        )
    run_sql(
        conn,
        """
        DROP FUNCTION delete_regime_prototype_set(text);
        DROP FUNCTION regime_prototype_set_json(text);
        DROP FUNCTION save_regime_prototype_set_from_document(text, jsonb, double precision);
        DROP FUNCTION regime_prototype_document_parse(jsonb);
        DROP FUNCTION regime_document_date(jsonb, text, text);
        DROP FUNCTION regime_document_count(jsonb, text, text);
        DROP FUNCTION regime_document_number(jsonb, text, text);
        DROP FUNCTION save_regime_prototype_set(text, text, jsonb, double precision);
        DROP FUNCTION regime_store_prototype_set(regime_prototype_sets,
                                                 regime_prototype_set_members[]);
        DROP FUNCTION fit_regime_temperature(text, jsonb);
        DROP FUNCTION regime_prototype_set_members_of(text, jsonb);
        DROP FUNCTION regime_temperature_fit(text, regime_prototype_set_members[]);
        DROP FUNCTION regime_softmax_nll(double precision, double precision[], bigint[],
                                         double precision[]);
        DROP FUNCTION regime_prototype_set(text);
        DROP FUNCTION regime_prototype_set_exists_error(text);
        DROP FUNCTION regime_check_temperature(double precision);
        DROP FUNCTION regime_check_prototype_set_name(text);
        DROP TABLE regime_prototype_set_members;
        DROP TABLE regime_prototype_sets;
        DROP FUNCTION regime_prototype_set_complete();
        DROP FUNCTION regime_prototype_set_members_truncated();
        DROP FUNCTION regime_prototype_set_member_removed();
        DROP FUNCTION regime_prototype_set_member_added();
        DROP FUNCTION regime_prototype_set_frozen();
        DROP FUNCTION regime_prototype_set_saving();
        DROP FUNCTION regime_prototype_set_name_is_valid(text);
        """,
    )
