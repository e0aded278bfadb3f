"""Alembic environment of regime-pg.

The database comes from, in order: a connection handed over by
``regime_pg.migrate`` (``config.attributes["connection"]``), ``-x dsn=...``,
the ``REGIME_PG_DSN`` environment variable, else the embedded server.

regime-pg keeps its history in its own version table,
``regime_pg_alembic_version``, so it lives beside the Regime Engine's own
Alembic chain (``alembic_version``) without touching it.  At base (after
``downgrade base``) that table is dropped too: nothing of regime-pg remains.

The revisions run in one transaction, so an upgrade refused by a check
(``regimes`` of another shape, pgvector missing or not allowed) leaves no
trace, not even the bookkeeping of the revisions before it.  The backfill
(0005) is the one place that transaction is cut: its ``autocommit_block``
commits what came before (every check has passed by then), each batch
commits on its own, and the revisions after it run in a new transaction.
"""

from __future__ import annotations

import logging

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

from regime_pg.connection import resolve_dsn
from regime_pg.migration_ops import check_server_version, fetch_value, target_schema

VERSION_TABLE = "regime_pg_alembic_version"

config = context.config
log = logging.getLogger("regime_pg.migrate")


def _log_notice(diag: psycopg.errors.Diagnostic) -> None:
    level = logging.WARNING if diag.severity in ("WARNING", "ERROR") else logging.INFO
    log.log(level, "%s: %s", diag.severity, diag.message_primary)


def _run(connection: Connection) -> None:
    check_server_version(connection)
    raw = connection.connection.driver_connection
    if isinstance(raw, psycopg.Connection):
        raw.add_notice_handler(_log_notice)
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        # Beside regimes, where run_sql's search_path points, whatever the caller's path.
        version_table_schema=target_schema(connection),
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()
        if not context.get_context().opts.get("dont_mutate"):
            _drop_version_table_at_base(connection)


def _drop_version_table_at_base(connection: Connection) -> None:
    """Drop our version table when it holds no revision (Alembic itself never does)."""
    name = fetch_value(
        connection,
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))::text",
        (target_schema(connection), VERSION_TABLE),
    )
    if name is None:
        return
    if connection.exec_driver_sql(f"SELECT NOT EXISTS (SELECT FROM {name})").scalar():
        connection.exec_driver_sql(f"DROP TABLE {name}")


def run_migrations_online() -> None:
    """Run the migrations on a live connection."""
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    dsn = resolve_dsn(context.get_x_argument(as_dictionary=True).get("dsn"))
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        _run(connection)
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("regime-pg migrations run online only: they inspect the database first")
run_migrations_online()
