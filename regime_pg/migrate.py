"""Run regime-pg's Alembic migrations from Python (what ``regime-pg migrate`` does).

>>> from regime_pg.migrate import upgrade, current_revision
>>> upgrade("postgresql://localhost/engine")          # doctest: +SKIP
>>> current_revision("postgresql://localhost/engine")  # doctest: +SKIP
'0006'
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from regime_pg._resources import migrations_dir
from regime_pg.connection import resolve_dsn, translated_errors
from regime_pg.errors import MigrationError
from regime_pg.migration_ops import target_schema

VERSION_TABLE = "regime_pg_alembic_version"


def alembic_config() -> Config:
    """An Alembic configuration pointing at regime-pg's migrations."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(migrations_dir() / "versions"))
    return config


@contextmanager
def _migration_errors() -> Iterator[None]:
    """Alembic's and SQLAlchemy's exceptions as regime-pg errors.

    SQLAlchemy wraps psycopg's errors (cannot connect, ...) in its own
    classes; an unknown revision is Alembic's ``CommandError``.
    """
    try:
        with translated_errors():
            try:
                yield
            except DBAPIError as exc:
                if isinstance(exc.orig, psycopg.Error):
                    raise exc.orig from exc
                raise
    except CommandError as exc:
        raise MigrationError(str(exc)) from exc


@contextmanager
def _connection(dsn: str | None) -> Iterator[Connection]:
    target = resolve_dsn(dsn)
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(target),
        poolclass=pool.NullPool,
    )
    try:
        with _migration_errors(), engine.connect() as connection:
            yield connection
            connection.commit()
    finally:
        engine.dispose()


def upgrade(dsn: str | None = None, revision: str = "head") -> None:
    """Upgrade the database at ``dsn`` (default: see ``resolve_dsn``) to ``revision``."""
    with _connection(dsn) as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(dsn: str | None = None, revision: str = "base") -> None:
    """Downgrade to ``revision``; ``base`` removes everything regime-pg added."""
    with _connection(dsn) as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(dsn: str | None = None) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with _connection(dsn) as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": VERSION_TABLE,
                "version_table_schema": target_schema(connection),
            },
        )
        return context.get_current_revision()


def head_revision() -> str:
    """The newest revision shipped with this version of regime-pg."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head
