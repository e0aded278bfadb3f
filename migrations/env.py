"""Alembic environment of regime-pg.

The database comes from, in order: a connection handed over by
``regime_pg.migrate`` (``config.attributes["connection"]``), ``-x dsn=...``,
the ``REGIME_PG_DSN`` environment variable, else the embedded server.

regime-pg keeps its history in its own version table,
``regime_pg_alembic_version``, so it lives beside the Regime Engine's own
Alembic chain (``alembic_version``) without touching it.
"""

from __future__ import annotations

import logging

import psycopg
from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

from regime_pg.connection import resolve_dsn

VERSION_TABLE = "regime_pg_alembic_version"

config = context.config
log = logging.getLogger("regime_pg.migrate")


def _log_notice(diag: psycopg.errors.Diagnostic) -> None:
    level = logging.WARNING if diag.severity in ("WARNING", "ERROR") else logging.INFO
    log.log(level, "%s: %s", diag.severity, diag.message_primary)


def _run(connection: Connection) -> None:
    raw = connection.connection.driver_connection
    if isinstance(raw, psycopg.Connection):
        raw.add_notice_handler(_log_notice)
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


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
