"""``regime-pg db start | stop | status | url | psql``: the embedded default server.

``status`` exits 0 when the server runs and 3 when it does not, like
``pg_ctl status``; ``psql`` runs the psql shipped with the server, connected
to it through PGHOST, PGPORT, PGUSER and PGDATABASE (the regime_pg database).
Every argument after ``psql`` goes to psql, as psql reads it: ``db psql -c
'select 1'``, ``db psql -f q1.sql``, ``db psql postgres`` (another database);
db's own options go before ``psql``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from regime_pg import embedded
from regime_pg.cli._common import CommandParser
from regime_pg.connection import EMBEDDED_DATABASE


def register(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Add the ``db`` subcommand."""
    parser = commands.add_parser(
        "db",
        help="manage the embedded PostgreSQL server",
        description=(
            "Manage the embedded PostgreSQL (with pgvector). Data lives in "
            "$REGIME_PG_DATA_DIR, else in the user data directory (regime-pg/pg<major>)."
        ),
        epilog=(
            "psql: every argument after it goes to the psql shipped with the server, "
            "e.g. regime-pg db psql -c 'select 1' or regime-pg db psql -f q1.sql; "
            "--data-dir goes before psql."
        ),
    )
    parser.add_argument(
        "action", choices=("start", "stop", "status", "url", "psql"), help="what to do"
    )
    parser.add_argument("--data-dir", type=Path, help="data directory (default: see above)")
    parser.add_argument(
        "--major",
        type=int,
        choices=embedded.SUPPORTED_MAJORS,
        help="PostgreSQL major for a new data directory (default: 18)",
    )
    parser.set_defaults(handler=run, psql_args=[])


def run(args: argparse.Namespace) -> int:
    """Start, stop, describe the embedded server, print its DSN, or run psql on it."""
    if args.action == "start":
        uri = embedded.ensure_database(embedded.start(args.data_dir, args.major), EMBEDDED_DATABASE)
        print(uri)
    elif args.action == "stop":
        was_running = embedded.stop(args.data_dir)
        print("stopped" if was_running else "not running")
    elif args.action == "status":
        state = embedded.status(args.data_dir)
        print(f"running: {'yes' if state.running else 'no'}")
        print(f"data directory: {state.data_dir}")
        print(f"postgresql major: {state.major if state.major else 'not initialised'}")
        if state.running:
            print(f"pid: {state.pid}")
            print(f"url: {_database_url(args.data_dir)}")
        return 0 if state.running else 3
    elif args.action == "url":
        print(_database_url(args.data_dir))
    else:
        env = {**os.environ, **_psql_environment(_database_url(args.data_dir))}
        env.pop("PGSERVICE", None)  # a service file's settings would win over these
        psql = str(embedded.psql_path(embedded.status(args.data_dir).major))
        sys.stdout.flush()
        # "--" ended regime-pg's options before psql took everything after it: not psql's
        psql_args = args.psql_args[1:] if args.psql_args[:1] == ["--"] else args.psql_args
        os.execve(psql, [psql, *psql_args], env)
    sys.stdout.flush()
    return 0


#: libpq's environment variable for each part of the embedded server's DSN.
_PG_ENVIRONMENT = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "dbname": "PGDATABASE",
    "password": "PGPASSWORD",
}


def _psql_environment(dsn: str) -> dict[str, str]:
    """``dsn`` as libpq's environment: psql's own DBNAME and options then work as usual.

    >>> _psql_environment("postgresql://postgres@/regime_pg?host=/tmp/pg&port=5432")
    {'PGUSER': 'postgres', 'PGDATABASE': 'regime_pg', 'PGHOST': '/tmp/pg', 'PGPORT': '5432'}
    """
    parts = conninfo_to_dict(dsn)
    # the embedded server's DSN holds no other part (a socket directory, no TLS)
    return {_PG_ENVIRONMENT[k]: str(v) for k, v in parts.items() if k in _PG_ENVIRONMENT}


def _database_url(data_dir: Path | None) -> str:
    """The DSN of regime-pg's database on the running embedded server."""
    return embedded.ensure_database(embedded.url(data_dir), EMBEDDED_DATABASE)
