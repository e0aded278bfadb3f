"""``regime-pg demo``: the main job on real data, on the embedded server by default."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from regime_pg import migrate
from regime_pg.cli._common import CommandParser, UsageError, add_dsn_argument, date_arg
from regime_pg.connection import connect, resolve_dsn
from regime_pg.errors import InvalidInputError

log = logging.getLogger("regime_pg.cli")


def register(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Add the ``demo`` subcommand."""
    parser = commands.add_parser(
        "demo",
        help="load S&P 500 and NASDAQ demo data, calibrate, write prototype documents",
        description=(
            "Start the embedded server (unless --dsn), migrate, turn real daily index data "
            "(1999-2018, from the optional 'arch' package) into regime embeddings for US and "
            "US_TECH (2000-03-31..2018-12-31: the first 314 trading days are the encoder's "
            "warm-up), calibrate NEUTRAL on 2017 and CRISIS on 2008-09-15..2009-03-09, and "
            "write regime_prototypes_<REGION>.json. The rows of both regions are replaced "
            "and calibrated in one transaction: on any error the database is left as it was."
        ),
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("."), help="where to write the documents"
    )
    parser.add_argument(
        "--start",
        type=date_arg,
        help="first as_of_date to load, 2008-09-15 or earlier (default: all, from 2000-03-31)",
    )
    parser.add_argument(
        "--end",
        type=date_arg,
        help="last as_of_date to load, 2017-12-31 or later (default: all, to 2018-12-31)",
    )
    add_dsn_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo end to end and print its summary table.

    Everything that can be checked without the database is checked first:
    the range (exit 2 when it is reversed or misses a calibration window),
    the ``arch`` data and the encoding of both regions. Only then does the
    demo migrate and replace rows.
    """
    from regime_pg.demo.pipeline import check_range, encode_regions, format_table, run_demo

    try:
        check_range(args.start, args.end)
    except InvalidInputError as exc:
        raise UsageError(str(exc)) from exc
    encoded = encode_regions(args.start, args.end)  # fails here when 'arch' is missing
    dsn = resolve_dsn(args.dsn)
    log.info("migrating")
    migrate.upgrade(dsn)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with connect(dsn) as conn:
        results = run_demo(conn, args.output_dir, args.start, args.end, encoded=encoded)
    sys.stdout.write(format_table(results))
    return 0
