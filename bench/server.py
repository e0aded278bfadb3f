"""The benchmark's own embedded PostgreSQL, in a temporary directory.

Never the user's default server: the data directory is always given
explicitly, and removed at the end unless ``--keep`` asks otherwise.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import psycopg
from psycopg import sql

from regime_pg import embedded, migrate
from regime_pg.connection import Connection, use_vector_types

from .timing import progress


@dataclass(frozen=True)
class BenchServer:
    admin_dsn: str
    data_dir: Path
    major: int

    def dsn(self, database: str) -> str:
        return psycopg.conninfo.make_conninfo(self.admin_dsn, dbname=database)

    def create_database(self, name: str, template: str = "template0",
                        strategy: Literal["WAL_LOG", "FILE_COPY"] = "WAL_LOG") -> str:
        """A fresh database (dropped first if it exists), a copy of ``template``; its DSN.

        ``strategy`` is CREATE DATABASE's: WAL_LOG (PostgreSQL 15's default) or
        FILE_COPY, a checkpoint then the files copied, without WAL for every
        page, for a large ``template`` (which must have no connection open).
        """
        self.drop_database(name)
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY {}").format(
                    sql.Identifier(name), sql.Identifier(template), sql.SQL(strategy)
                )
            )
        return self.dsn(name)

    def copy_database(self, name: str, template: str) -> str:
        """A copy of ``template`` (dropped first if it exists), file by file; its DSN."""
        return self.create_database(name, template, strategy="FILE_COPY")

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists (its connections closed): frees its disk."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def migrated_database(self, name: str) -> str:
        """A fresh database migrated to head; its DSN."""
        dsn = self.create_database(name)
        migrate.upgrade(dsn)
        return dsn

    def connect(self, database: str) -> Connection:
        conn = psycopg.connect(self.dsn(database), autocommit=True)
        use_vector_types(conn)
        conn.add_notice_handler(lambda diag: None)
        return conn

    def environment(self, database: str) -> dict[str, Any]:
        """Server version and the settings that shape the figures."""
        names = [
            "server_version", "shared_buffers", "work_mem", "hash_mem_multiplier",
            "effective_cache_size", "max_parallel_workers_per_gather", "max_parallel_workers",
            "max_worker_processes", "jit", "random_page_cost",
        ]
        with self.connect(database) as conn:
            rows = conn.execute(
                "SELECT name, current_setting(name) FROM unnest(%s::text[]) AS name",
                (names,),
            ).fetchall()
            settings = dict(cast(list[tuple[str, str]], rows))
            vector = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()
            revision = conn.execute(
                "SELECT version_num FROM regime_pg_alembic_version"
            ).fetchone()
        return {
            "postgresql": settings,
            "pgvector": vector[0] if vector else None,
            "regime_pg_revision": revision[0] if revision else None,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }


def workers_launched(conn: Connection) -> int | None:
    """Parallel workers launched in this database so far (PostgreSQL 18), else None.

    The leader counts them; its own counts are flushed first.  The reading
    itself starts no worker, whatever the session's settings: under settings
    that make every plan parallel, its scan of pg_database would.
    """
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    setting = conn.execute("SELECT current_setting('max_parallel_workers_per_gather')").fetchone()
    assert setting is not None
    conn.execute("SET max_parallel_workers_per_gather = 0")
    try:
        row = conn.execute(
            "SELECT to_jsonb(d) -> 'parallel_workers_launched' FROM pg_stat_database AS d"
            " WHERE datname = current_database()"
        ).fetchone()
    finally:
        conn.execute("SELECT set_config('max_parallel_workers_per_gather', %s, false)",
                     (setting[0],))
    return None if row is None or row[0] is None else int(str(row[0]))


#: ``--shared-buffers`` value that keeps the embedded server's own setting.
EMBEDDED_SHARED_BUFFERS = "embedded"


def quarter_of_memory() -> str:
    """25% of this machine's physical memory, in MB: the starting value the
    PostgreSQL documentation gives for a dedicated server with 1 GB or more.

    >>> quarter_of_memory().endswith("MB")
    True
    """
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{total // 4 // 2**20}MB"


@contextmanager
def bench_server(major: int, data_dir: Path | None, keep: bool,
                 shared_buffers: str | None = None) -> Iterator[BenchServer]:
    """Start the benchmark's server; stop it (and remove its directory) afterwards.

    ``shared_buffers``: set it (ALTER SYSTEM, then a restart); None or
    ``EMBEDDED_SHARED_BUFFERS`` keeps the embedded server's default (128MB).
    """
    if shared_buffers == EMBEDDED_SHARED_BUFFERS:
        shared_buffers = None
    owned = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="regime-pg-bench-")) if data_dir is None else data_dir
    pgdata = root / "pgdata" if owned else root
    progress(f"starting embedded PostgreSQL {major} in {pgdata}")
    dsn = embedded.start(data_dir=pgdata, major=major)
    if shared_buffers:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(
                sql.Literal(shared_buffers)))
        embedded.stop(data_dir=pgdata)
        dsn = embedded.start(data_dir=pgdata, major=major)
        progress(f"restarted with shared_buffers = {shared_buffers}")
    try:
        yield BenchServer(dsn, pgdata, major)
    finally:
        if keep:
            progress(f"server left running in {pgdata} (--keep): {dsn}")
        else:
            progress("stopping the benchmark's server")
            embedded.stop(data_dir=pgdata)
            if owned:
                shutil.rmtree(root, ignore_errors=True)
