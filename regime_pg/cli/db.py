"""``regime-pg db start | stop | status | url | psql``: the embedded default server.

``status`` exits 0 when the server runs and 3 when it does not, like
``pg_ctl status``; ``psql`` opens the psql shipped with the server on the
regime_pg database (arguments after ``--`` go to psql).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from regime_pg import embedded
from regime_pg.cli._common import CommandParser
from regime_pg.connection import EMBEDDED_DATABASE
from regime_pg.errors import InvalidInputError


def register(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Add the ``db`` subcommand."""
    parser = commands.add_parser(
        "db",
        help="manage the embedded PostgreSQL server",
        description=(
            "Manage the embedded PostgreSQL (with pgvector). Data lives in "
            "$REGIME_PG_DATA_DIR, else in the user data directory (regime-pg/pg<major>)."
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
    parser.add_argument("psql_args", nargs="*", help="with psql: arguments for psql (after --)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Start, stop, describe the embedded server or print its DSN."""
    if args.psql_args and args.action != "psql":
        raise InvalidInputError(f"db {args.action} takes no arguments: {' '.join(args.psql_args)}")
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
        uri = _database_url(args.data_dir)
        psql = str(embedded.psql_path(embedded.status(args.data_dir).major))
        sys.stdout.flush()
        os.execv(psql, [psql, "-d", uri, *args.psql_args])
    sys.stdout.flush()
    return 0


def _database_url(data_dir: Path | None) -> str:
    """The DSN of regime-pg's database on the running embedded server."""
    return embedded.ensure_database(embedded.url(data_dir), EMBEDDED_DATABASE)
