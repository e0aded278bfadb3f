"""``regime-pg compute``: the calibration script's flags, computed in the database.

    regime-pg compute --region US --neutral-start 2018-01-01 --neutral-end 2018-12-31 \\
        --crisis-start 2020-03-01 --crisis-end 2020-04-30 --output regime_prototypes_US.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
from pathlib import Path

from regime_pg.cli._common import (
    CommandParser,
    UsageError,
    add_dsn_argument,
    add_temperature_arguments,
    date_arg,
    emit,
    report_saved,
    saving_new_set,
    temperature_from_args,
    write_output,
)
from regime_pg.client import prototypes_document
from regime_pg.connection import Connection, connect
from regime_pg.errors import InvalidInputError
from regime_pg.prototypes import DateWindow, RegimeLabel, parse_date, parse_label
from regime_pg.sets import PrototypeSet, save_set

log = logging.getLogger("regime_pg.cli")


def register(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Add the ``compute`` subcommand."""
    parser = commands.add_parser(
        "compute",
        help="compute a region's prototypes and print or write the prototype document",
        description="Compute regime prototypes server-side; the calibration script's flags.",
    )
    parser.add_argument("--region", required=True, help="region, as in regimes.region (e.g. US)")
    parser.add_argument("--neutral-start", required=True, type=date_arg, metavar="YYYY-MM-DD")
    parser.add_argument("--neutral-end", required=True, type=date_arg, metavar="YYYY-MM-DD")
    parser.add_argument("--crisis-start", type=date_arg, metavar="YYYY-MM-DD")
    parser.add_argument("--crisis-end", type=date_arg, metavar="YYYY-MM-DD")
    parser.add_argument(
        "--window",
        action="append",
        default=[],
        metavar="LABEL=START:END",
        help="another labelled window, e.g. RISK_OFF=2011-08-01:2011-10-31 (repeatable)",
    )
    parser.add_argument(
        "--output", type=Path, help="write the document to this file (default: stdout)"
    )
    add_dsn_argument(parser)
    add_temperature_arguments(parser)
    parser.add_argument(
        "--save",
        metavar="NAME",
        help="also store the prototypes as the immutable set NAME, committed once the "
        "document is written",
    )
    parser.set_defaults(handler=run)


def parse_window_arg(text: str) -> tuple[str, DateWindow]:
    """``LABEL=YYYY-MM-DD:YYYY-MM-DD`` as (label, window); ``UsageError`` otherwise.

    >>> parse_window_arg("RISK_OFF=2011-08-01:2011-10-31")[1].end_date
    datetime.date(2011, 10, 31)
    """
    label, sep, dates = text.partition("=")
    start, sep2, end = dates.partition(":")
    if not sep or not sep2:
        raise UsageError(f"--window takes LABEL=YYYY-MM-DD:YYYY-MM-DD, got {text!r}")
    try:
        window = DateWindow(
            parse_date(start, f"--window {label} start"), parse_date(end, f"--window {label} end")
        )
        return str(parse_label(label)), window
    except InvalidInputError as exc:  # a date, the label rule, a reversed window
        raise UsageError(str(exc)) from exc


def windows_from_args(args: argparse.Namespace) -> dict[str, DateWindow]:
    """The labelled windows the flags ask for, validated like the calibration script.

    Every problem is a ``UsageError`` (exit 2): nothing here needs the database.
    """
    windows = {RegimeLabel.NEUTRAL.value: _window("neutral", args.neutral_start, args.neutral_end)}
    if (args.crisis_start is None) != (args.crisis_end is None):
        raise UsageError("--crisis-start and --crisis-end go together: give both or neither")
    if args.crisis_start is not None:
        windows[RegimeLabel.CRISIS.value] = _window("crisis", args.crisis_start, args.crisis_end)
    for text in args.window:
        label, window = parse_window_arg(text)
        if label in windows:
            raise UsageError(f"label {label} is given twice")
        windows[label] = window
    return windows


def _window(name: str, start: dt.date, end: dt.date) -> DateWindow:
    if end < start:
        raise UsageError(f"--{name}-end {end} is before --{name}-start {start}")
    return DateWindow(start, end)


def run(args: argparse.Namespace) -> int:
    """Compute the document for the flags, store it with --save, print or write it."""
    if args.save is None and (args.fit_temperature or args.temperature is not None):
        raise UsageError("--temperature and --fit-temperature go with --save NAME")
    windows = windows_from_args(args)
    if args.fit_temperature and len(windows) < 2:
        raise UsageError(
            "--fit-temperature needs two labelled windows or more: with one prototype every "
            "confidence is 1, whatever the temperature"
        )
    temperature = temperature_from_args(args)
    with connect(args.dsn) as conn:
        if args.save is not None:
            report_saved(save_and_write(conn, args, windows, temperature))
            if args.output is not None:
                log.info("wrote %s", args.output)
            return 0
        document = prototypes_document(conn, args.region, windows)
    emit(document.dumps(), args.output)
    return 0


def save_and_write(
    conn: Connection,
    args: argparse.Namespace,
    windows: dict[str, DateWindow],
    temperature: float | None,
) -> PrototypeSet:
    """Save the set ``--save`` names and write its document: both, or neither.

    The set (with its fitted temperature, for ``--fit-temperature``) is saved
    in a transaction that commits only once the document is written in full,
    to ``--output`` (atomically) or to stdout: a failed write rolls the set
    back.  When the commit itself fails, the file just written is removed
    (a file it replaced is not brought back; stdout cannot be taken back).
    """
    written: Path | None = None
    try:
        with conn.transaction():
            with saving_new_set(args.save):
                stored = save_set(conn, args.save, args.region, windows, temperature)
            write_output(stored.document.dumps(), args.output)
            written = args.output
    except BaseException:
        if written is not None:
            with contextlib.suppress(OSError):
                written.unlink()
        raise
    return stored
