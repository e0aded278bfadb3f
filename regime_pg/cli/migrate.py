"""``regime-pg migrate``: upgrade to head, or downgrade with ``--downgrade REV``."""

from __future__ import annotations

import argparse
import logging

from regime_pg import migrate as migrations
from regime_pg.cli._common import CommandParser, add_dsn_argument

log = logging.getLogger("regime_pg.cli")


def register(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Add the ``migrate`` subcommand."""
    parser = commands.add_parser(
        "migrate",
        help="apply regime-pg's migrations (or remove them with --downgrade base)",
        description="Upgrade the database to regime-pg's newest revision, or downgrade it.",
    )
    add_dsn_argument(parser)
    parser.add_argument(
        "--downgrade",
        metavar="REVISION",
        help="downgrade to REVISION instead; 'base' removes everything regime-pg added",
    )
    parser.add_argument(
        "--revision", default="head", help="upgrade to this revision (default: head)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Upgrade or downgrade, then report the revision the database is at."""
    if args.downgrade:
        migrations.downgrade(args.dsn, args.downgrade)
    else:
        migrations.upgrade(args.dsn, args.revision)
    revision = migrations.current_revision(args.dsn)
    log.info("database at revision %s", revision or "base")
    return 0
