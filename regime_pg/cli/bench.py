"""``regime-pg bench``: the benchmark suite (``python -m bench``), from a source checkout."""

from __future__ import annotations

import argparse

from regime_pg.cli._common import CommandParser
from regime_pg.errors import InvalidInputError


def register(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Add the ``bench`` subcommand."""
    parser = commands.add_parser(
        "bench",
        help="benchmark server-side prototypes against the client path (own embedded server)",
        description=(
            "Run python -m bench: an embedded PostgreSQL in a temporary directory, B1..B6, "
            "bench/results.json, results.md and scaling.png. Needs a source checkout."
        ),
    )
    parser.add_argument(
        "bench_args",
        nargs=argparse.REMAINDER,
        metavar="...",
        help="passed to python -m bench: --quick, --full, --output FILE",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark suite with the remaining arguments."""
    try:
        from bench.__main__ import main
    except ImportError as exc:
        raise InvalidInputError(
            "regime-pg bench needs a source checkout (bench/ is not in the wheel): "
            "run python -m bench from the repository root"
        ) from exc
    return int(main(args.bench_args))
