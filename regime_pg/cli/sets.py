"""``regime-pg sets list | show NAME | export NAME | import FILE --name NAME | delete NAME``.

Stored prototype sets never change: a new version is a new name. ``export``
writes the same document format as ``compute``, byte for byte, and an
imported document exports back to the same bytes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from regime_pg.cli._common import (
    CommandParser,
    add_dsn_argument,
    add_temperature_arguments,
    emit,
    printable,
    report_saved,
    saving_new_set,
    temperature_from_args,
)
from regime_pg.connection import connect
from regime_pg.document import load_document
from regime_pg.sets import delete_set, get_set, import_set, list_sets, windows_text

log = logging.getLogger("regime_pg.cli")


def register(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Add the ``sets`` subcommand and its actions."""
    parser = commands.add_parser(
        "sets",
        help="list, show, export, import or delete stored prototype sets",
        description="Stored prototype sets (immutable; a new version is a new name).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="one line per stored set")
    add_dsn_argument(listing)
    listing.set_defaults(handler=run_list)

    show = actions.add_parser("show", help="a set's details and prototypes")
    show.add_argument("name")
    add_dsn_argument(show)
    show.set_defaults(handler=run_show)

    export = actions.add_parser("export", help="write a set as a prototype document")
    export.add_argument("name")
    export.add_argument("--output", type=Path, help="file to write (default: stdout)")
    add_dsn_argument(export)
    export.set_defaults(handler=run_export)

    load = actions.add_parser("import", help="store a prototype document as a new set")
    load.add_argument("file", type=Path)
    load.add_argument("--name", required=True, help="name of the new set")
    add_temperature_arguments(load)
    add_dsn_argument(load)
    load.set_defaults(handler=run_import)

    delete = actions.add_parser("delete", help="delete a whole set")
    delete.add_argument("name")
    add_dsn_argument(delete)
    delete.set_defaults(handler=run_delete)


def run_list(args: argparse.Namespace) -> int:
    """Print one line per set: name, region, temperature, windows, creation."""
    with connect(args.dsn) as conn:
        infos = list_sets(conn)
    for info in infos:
        fitted = " (fitted)" if info.fit else ""
        sys.stdout.write(
            f"{info.name}\t{printable(info.region)}\tT={info.temperature:.6g}{fitted}\t"
            f"{info.created_at:%Y-%m-%d %H:%M:%S%z}\t{printable(info.created_by)}\t"
            f"{printable(windows_text(info.windows))}\n"
        )
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print a set's header and one line per prototype."""
    with connect(args.dsn) as conn:
        stored = get_set(conn, args.name)
    info = stored.info
    lines = [
        f"name:          {info.name}",
        f"region:        {printable(info.region)}",
        f"encoder:       {info.encoder_model_id} ({info.embedding_dim} dimensions)",
        f"temperature:   {info.temperature:.6g}",
        f"created:       {info.created_at:%Y-%m-%d %H:%M:%S%z} by {printable(info.created_by)}",
        f"source:        {info.source}",
    ]
    if info.fit is not None:
        lines.append(
            f"fit:           log-loss {info.fit.log_loss:.6g} (at T=1: "
            f"{info.fit.log_loss_at_1:.6g}), {info.fit.n} calibration dates"
            + (", separable" if info.fit.separable else "")
        )
    lines.append(f"{'label':<10} {'window':<22} {'n_dates':>7} {'l2_norm':>9} {'dispersion':>10}")
    for p in stored.document.prototypes:
        window = str(p.window) if p.window else "-"
        n_dates = "-" if p.n_dates is None else str(p.n_dates)
        l2 = "-" if p.l2_norm is None else f"{p.l2_norm:.4f}"
        dispersion = "-" if p.dispersion is None else f"{p.dispersion:.4f}"
        lines.append(f"{p.label!s:<10} {window:<22} {n_dates:>7} {l2:>9} {dispersion:>10}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Write the set's document."""
    with connect(args.dsn) as conn:
        stored = get_set(conn, args.name)
    emit(stored.document.dumps(), args.output)
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Store a document file as a new set."""
    document = load_document(args.file)
    with connect(args.dsn) as conn, saving_new_set(args.name):
        stored = import_set(conn, args.name, document, temperature_from_args(args))
    report_saved(stored)
    return 0


def run_delete(args: argparse.Namespace) -> int:
    """Delete a whole set."""
    with connect(args.dsn) as conn:
        delete_set(conn, args.name)
    log.info("deleted set %s", args.name)
    return 0
