"""``regime-pg demo``: the main job on real data, on the embedded server by default."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from regime_pg import migrate
from regime_pg.cli._common import CommandParser, UsageError, add_dsn_argument, date_arg
from regime_pg.connection import connect, resolve_dsn

log = logging.getLogger("regime_pg.cli")


def register(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Add the ``demo`` subcommand."""
    parser = commands.add_parser(
        "demo",
        help="load S&P 500 and NASDAQ demo data, calibrate, write prototype documents",
        description=(
            "Start the embedded server (unless --dsn), migrate, load real daily index data "
            "(1999-2018, from the optional 'arch' package) as regime embeddings for US and "
            "US_TECH, calibrate NEUTRAL on 2017 and CRISIS on 2008-09-15..2009-03-09, and "
            "write regime_prototypes_<REGION>.json."
        ),
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("."), help="where to write the documents"
    )
    parser.add_argument("--start", type=date_arg, help="first as_of_date to load (default: all)")
    parser.add_argument("--end", type=date_arg, help="last as_of_date to load (default: all)")
    add_dsn_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo end to end and print its summary table."""
    from regime_pg.demo.encoder import load_market
    from regime_pg.demo.pipeline import DEMO_REGIONS, format_table, run_demo

    if args.start is not None and args.end is not None and args.end < args.start:
        raise UsageError(f"--end {args.end} is before --start {args.start}")
    load_market(DEMO_REGIONS[0])  # fails early, before any change, when 'arch' is missing
    dsn = resolve_dsn(args.dsn)
    log.info("migrating")
    migrate.upgrade(dsn)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with connect(dsn) as conn:
        results = run_demo(conn, args.output_dir, args.start, args.end)
    sys.stdout.write(format_table(results))
    return 0
