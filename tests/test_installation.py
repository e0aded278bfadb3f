"""Finding regime-pg's schema without the session's search_path (``regime_pg.installation``).

Real databases with regime-pg migrated into schemas that are not ``public``:
one installation in ``analytics`` (found with a search_path that does not
list it), and two, ``alpha`` and ``beta``, in one database (the setting
``regime_pg.schema`` picks one; without it the client refuses to guess).
pgvector lives in ``public`` in both, so ``connect()`` can register its type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from psycopg import sql

from regime_pg import migrate
from regime_pg.client import compute_prototypes
from regime_pg.connection import connect
from regime_pg.errors import (
    AmbiguousInstallationError,
    InstallationNotFoundError,
    SchemaNotReadyError,
    UnknownRegionError,
)
from regime_pg.installation import VERSION_TABLE, installation_schema
from tests.conftest import Server, create_database, database_dsn, drop_database
from tests.engine import business_days, insert_rows

DIM = 384
DATES = business_days(dt.date(2018, 1, 1), 30)
WINDOWS = {"NEUTRAL": (DATES[0], DATES[-1])}


def with_options(dsn: str, options: str) -> str:
    """``dsn`` with the connection's ``options`` (``-c name=value ...``)."""
    return psycopg.conninfo.make_conninfo(dsn, options=options)


def install(dsn: str, schema: str, region: str | None = None) -> None:
    """Migrate regime-pg into ``schema`` and, with ``region``, insert engine rows there."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    in_schema = with_options(dsn, f"-c search_path={schema}")
    migrate.upgrade(in_schema)
    if region is not None:
        rng = np.random.default_rng(7)
        with psycopg.connect(in_schema, autocommit=True) as conn:
            insert_rows(conn, region, DATES, rng.standard_normal((len(DATES), DIM)))


def new_database(server: Server) -> str:
    """An empty database with pgvector in ``public``; returns its name."""
    name = create_database(server)
    with psycopg.connect(database_dsn(server.admin_dsn, name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector SCHEMA public")
    return name


@pytest.fixture(scope="module")
def analytics(pg_server: Server) -> Iterator[str]:
    """DSN of a database with regime-pg in ``analytics`` only (region US there)."""
    name = new_database(pg_server)
    dsn = database_dsn(pg_server.admin_dsn, name)
    try:
        install(dsn, "analytics", region="US")
        yield dsn
    finally:
        drop_database(pg_server, name)


@pytest.fixture(scope="module")
def two(pg_server: Server) -> Iterator[str]:
    """DSN of a database with regime-pg in ``alpha`` (no rows) and ``beta`` (region EU)."""
    name = new_database(pg_server)
    dsn = database_dsn(pg_server.admin_dsn, name)
    try:
        install(dsn, "alpha")
        install(dsn, "beta", region="EU")
        yield dsn
    finally:
        drop_database(pg_server, name)


def test_version_table_is_the_one_migrate_creates() -> None:
    assert VERSION_TABLE == migrate.VERSION_TABLE


def test_found_in_a_schema_the_search_path_does_not_list(analytics: str) -> None:
    """The default path ("$user", public) misses analytics: the client still finds it."""
    with connect(analytics) as conn:
        path = conn.execute("SHOW search_path").fetchone()
        assert path == ('"$user", public',)
        assert installation_schema(conn) == "analytics"
        (neutral,) = compute_prototypes(conn, "US", WINDOWS)
    assert neutral.n_dates == len(DATES)


def test_the_setting_picks_one_of_two_installations(two: str) -> None:
    """regime_pg.schema decides which installation every statement names."""
    with connect(with_options(two, "-c regime_pg.schema=beta")) as conn:
        assert installation_schema(conn) == "beta"
        (neutral,) = compute_prototypes(conn, "EU", WINDOWS)
        assert neutral.n_dates == len(DATES)
    with connect(with_options(two, "-c regime_pg.schema=alpha")) as conn:
        assert installation_schema(conn) == "alpha"
        with pytest.raises(UnknownRegionError):  # EU's rows are in beta.regimes only
            compute_prototypes(conn, "EU", WINDOWS)


def test_two_installations_without_the_setting_is_an_error(two: str) -> None:
    with connect(two) as conn, pytest.raises(AmbiguousInstallationError) as caught:
        compute_prototypes(conn, "EU", WINDOWS)
    assert isinstance(caught.value, SchemaNotReadyError)
    assert str(caught.value) == (
        "regime-pg is installed in several schemas of this database: 'alpha', 'beta'; "
        "set regime_pg.schema to the one to use, e.g. options='-c regime_pg.schema=<schema>' "
        "in the DSN, or ALTER ROLE ... SET regime_pg.schema = '<schema>'"
    )


@pytest.mark.parametrize("schema", ["public", "nowhere"])
def test_setting_naming_a_schema_without_regime_pg_is_an_error(two: str, schema: str) -> None:
    with (
        connect(with_options(two, f"-c regime_pg.schema={schema}")) as conn,
        pytest.raises(InstallationNotFoundError) as caught,
    ):
        installation_schema(conn)
    assert str(caught.value) == (
        f"regime_pg.schema names the schema '{schema}', which holds no regime-pg "
        "installation (no table regime_pg_alembic_version); installed in: 'alpha', 'beta'"
    )


def test_answer_is_cached_per_connection(two: str) -> None:
    """A SET before the first call counts; after it, the connection keeps its answer."""
    with connect(two) as conn:
        conn.execute("SET regime_pg.schema = 'alpha'")
        assert installation_schema(conn) == "alpha"
        conn.execute("SET regime_pg.schema = 'beta'")
        assert installation_schema(conn) == "alpha"
    with connect(two) as conn:
        conn.execute("SET regime_pg.schema = 'beta'")
        assert installation_schema(conn) == "beta"


def test_not_installed_is_an_error_until_migrated(empty_db: str) -> None:
    """Errors are not cached: the same connection finds the installation once it exists."""
    with psycopg.connect(empty_db, autocommit=True) as conn:
        with pytest.raises(InstallationNotFoundError) as caught:
            installation_schema(conn)
        assert str(caught.value) == (
            "regime-pg is not installed in this database (no schema holds "
            "regime_pg_alembic_version); run: regime-pg migrate"
        )
        migrate.upgrade(empty_db)
        assert installation_schema(conn) == "public"


def test_temporary_tables_never_count(db: str) -> None:
    """Any session may create a temporary look-alike: it neither adds nor hides a schema."""
    with psycopg.connect(db, autocommit=True) as planter:
        planter.execute(f"CREATE TEMP TABLE {VERSION_TABLE} (version_num text)")
        with psycopg.connect(db, autocommit=True) as other:
            assert installation_schema(other) == "public"
        assert installation_schema(planter) == "public"
