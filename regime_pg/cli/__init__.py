"""The ``regime-pg`` command line.

    regime-pg compute --region US --neutral-start 2018-01-01 --neutral-end 2018-12-31
    regime-pg migrate [--dsn DSN] [--downgrade base]
    regime-pg db start | stop | status | url
    regime-pg demo [--output-dir DIR]
    regime-pg sets list | show NAME | export NAME | import FILE --name NAME | delete NAME
    regime-pg timeline --set NAME --start D --end D --output timeline.png [--csv F]
    regime-pg bench [--quick | --full] [--output F]
    regime-pg roles grant-reader ROLE | grant-writer ROLE | revoke ROLE [--writer-only] | audit
    regime-pg --version

Errors are one line on stderr and a non-zero exit: 2 for a command line that
is wrong on its own (argparse's checks, and ``UsageError``: values of the wrong
form, reversed date ranges, flags that need or exclude each other), found
before anything is read or written; 1 for everything else.  Progress goes to
stderr; ``--quiet`` silences it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from regime_pg.cli import bench, compute, db, demo, migrate, roles, sets, timeline
from regime_pg.cli._common import (
    CommandParser,
    add_quiet_everywhere,
    configure_progress,
    package_version,
    run_handler,
)


def build_parser() -> CommandParser:
    """The full argument parser, with every subcommand."""
    parser = CommandParser(
        prog="regime-pg",
        description="Regime prototypes computed inside PostgreSQL (pgvector).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (compute, migrate, db, demo, sets, timeline, roles, bench):
        module.register(commands)
    add_quiet_everywhere(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    head, passed_on = split_passthrough(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(head)
    if passed_on is not None:
        args.bench_args = passed_on
    configure_progress(quiet=args.quiet)
    return run_handler(args.handler, args)


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``argv`` up to ``bench``, and what follows it (None without ``bench``).

    ``bench`` hands everything after it to ``python -m bench``, options
    included: argparse's REMAINDER would refuse options that follow a
    subcommand (``regime-pg bench --quick``).

    >>> split_passthrough(["-q", "bench", "--quick", "--output", "r.json"])
    (['-q', 'bench'], ['--quick', '--output', 'r.json'])
    >>> split_passthrough(["compute", "--region", "bench"])
    (['compute', '--region', 'bench'], None)
    """
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):  # the subcommand: global options take no value
            if arg == "bench":
                return argv[: i + 1], argv[i + 1 :]
            break
    return argv, None


if __name__ == "__main__":
    sys.exit(main())
