"""``regime-pg sums enable | disable | status``: the centroid's stored bucket sums.

    regime-pg sums enable [--dsn DSN]     # triggers on regimes, sums filled (or rebuilt)
    regime-pg sums status [--dsn DSN]     # enabled: yes/no, and the rows stored
    regime-pg sums disable [--dsn DSN]    # triggers dropped, sums emptied

Run ``enable`` as the owner of ``regimes`` (it creates triggers on it); the
roles that write ``regimes`` need no grant.  ``status`` exits 0 when the sums
are enabled and 3 when they are not.
"""

from __future__ import annotations

import argparse
import logging

from regime_pg import bucket_sums
from regime_pg.cli._common import CommandParser, add_dsn_argument
from regime_pg.connection import connect

log = logging.getLogger("regime_pg.cli")

#: Exit status of ``status`` when the sums are not enabled (as ``db status``).
NOT_ENABLED = 3


def register(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Add the ``sums`` subcommand."""
    parser = commands.add_parser(
        "sums",
        help="enable, disable or inspect the stored bucket sums that speed up long windows",
        description=(
            "Stored bucket sums: statement triggers on regimes keep the sums of every "
            "15-day bucket and 240-day group, and centroids of long windows read them "
            "instead of every row. enable also rebuilds stale sums."
        ),
    )
    parser.add_argument("action", choices=("enable", "disable", "status"), help="what to do")
    add_dsn_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Enable, disable, or print the state of the stored sums."""
    with connect(args.dsn) as conn:
        if args.action == "enable":
            stored = bucket_sums.enable(conn)
            log.info("stored bucket sums enabled: %d buckets", stored)
            return 0
        if args.action == "disable":
            bucket_sums.disable(conn)
            log.info("stored bucket sums disabled")
            return 0
        state = bucket_sums.status(conn)
    print(f"enabled: {'yes' if state.enabled else 'no'}")
    print(f"regions: {state.regions}")
    print(f"buckets: {state.buckets}")
    print(f"groups: {state.groups}")
    return 0 if state.enabled else NOT_ENABLED
