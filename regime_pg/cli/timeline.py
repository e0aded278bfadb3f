"""``regime-pg timeline``: a stored set's view of history, as a plot and a CSV.

    regime-pg timeline --set us-2018-v1 --start 1999-01-01 --end 2018-12-31 \\
        --output timeline.png --csv timeline.csv --min-duration 5

The plot's format comes from the suffix of ``--output``: ``.png``, ``.svg`` or
``.pdf``; any other (or none) is an argument error, before any work.  Every
output's directory is checked before anything is written, and the plot is
drawn before the CSV is written, so a failure leaves neither file.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from regime_pg.cli._common import (
    CommandParser,
    UsageError,
    add_dsn_argument,
    check_writable,
    date_arg,
    emit,
    positive_int_arg,
    write_file,
)
from regime_pg.connection import connect
from regime_pg.errors import InvalidInputError, RegimePgError
from regime_pg.sets import get_set
from regime_pg.timeline import (
    classify_history,
    csv_text,
    plot_format,
    render_timeline,
    require_matplotlib,
)

log = logging.getLogger("regime_pg.cli")


def register(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Add the ``timeline`` subcommand."""
    parser = commands.add_parser(
        "timeline",
        help="classify a date range with a stored set; draw a plot, write a CSV",
        description=(
            "Distance to each prototype over time, the label as a coloured band and the "
            "calibration windows, from classify_regimes in SQL."
        ),
    )
    parser.add_argument("--set", required=True, dest="set_name", metavar="NAME")
    parser.add_argument("--start", required=True, type=date_arg, metavar="YYYY-MM-DD")
    parser.add_argument("--end", required=True, type=date_arg, metavar="YYYY-MM-DD")
    parser.add_argument(
        "--output",
        type=Path,
        metavar="PLOT",
        help="plot to draw; its suffix picks the format: .png, .svg or .pdf",
    )
    parser.add_argument("--csv", type=Path, help="CSV of the classified rows ('-' for stdout)")
    parser.add_argument(
        "--min-duration",
        type=positive_int_arg,
        default=1,
        metavar="N",
        help="absorb label runs shorter than N dates into their neighbours (default: 1)",
    )
    add_dsn_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Classify the range, then write what was asked for: every file or none."""
    if args.output is None and args.csv is None:
        raise UsageError("say what to write: --output PLOT and/or --csv FILE")
    if args.end < args.start:
        raise UsageError(f"--end {args.end} is before --start {args.start}")
    csv_path = None if args.csv is None or str(args.csv) == "-" else args.csv
    image_format = None
    if args.output is not None:
        try:
            image_format = plot_format(args.output, "--output")
        except InvalidInputError as exc:
            raise UsageError(str(exc)) from None
        require_matplotlib()  # before anything is written
    for path in (csv_path, args.output):
        if path is not None:
            check_writable(path)
    with connect(args.dsn) as conn:
        stored = get_set(conn, args.set_name)
        rows = classify_history(conn, args.set_name, args.start, args.end, args.min_duration)
    if not rows and args.output is not None:
        # fail before any output or progress: one error line, no CSV without its plot
        raise RegimePgError("nothing to plot: no classified dates in the range")
    log.info("classified %d dates", len(rows))
    image = None
    if image_format is not None:
        windows = {
            str(p.label): p.window for p in stored.document.prototypes if p.window is not None
        }
        title = (
            f"{stored.info.region}: distance to the prototypes of set {stored.name} "
            f"(T={stored.temperature:.3g}, min duration {args.min_duration})"
        )
        image = render_timeline(rows, windows, title, image_format)  # before any file
    if args.csv is not None:
        labels = [str(p.label) for p in stored.document.prototypes]
        emit(csv_text(rows, labels), csv_path)
    if image is not None:
        write_file(args.output, image)
        log.info("wrote %s", args.output)
    return 0
