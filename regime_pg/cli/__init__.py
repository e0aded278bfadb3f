"""The ``regime-pg`` command line.

    regime-pg compute --region US --neutral-start 2018-01-01 --neutral-end 2018-12-31
    regime-pg migrate [--dsn DSN] [--downgrade base]
    regime-pg db start | stop | status | url | psql [PSQL ARGUMENTS]
    regime-pg demo [--output-dir DIR]
    regime-pg sets list | show NAME | export NAME | import FILE --name NAME | delete NAME
    regime-pg timeline --set NAME --start D --end D --output timeline.png [--csv F]
    regime-pg bench [--quick | --full] [--output F]
    regime-pg roles grant-reader ROLE | grant-writer ROLE | revoke ROLE [--writer-only] | audit
    regime-pg sums enable | disable | status [--dsn DSN]
    regime-pg --version

Errors are one line on stderr and a non-zero exit: 2 for a command line that
is wrong on its own (argparse's checks, and ``UsageError``: values of the wrong
form, reversed date ranges, flags that need or exclude each other), found
before anything is read or written; 1 for everything else.  Progress goes to
stderr; ``--quiet`` silences it.  A closed stdout (``| head -1``) ends the
command quietly with 141, the status of a tool that SIGPIPE ended.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from regime_pg.cli import bench, compute, db, demo, migrate, roles, sets, sums, timeline
from regime_pg.cli._common import (
    CommandParser,
    add_quiet_everywhere,
    closed_stdout_exits_quietly,
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
    for module in (compute, migrate, db, demo, sets, timeline, roles, sums, bench):
        module.register(commands)
    add_quiet_everywhere(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    head, dest, passed_on = split_passthrough(parser, list(sys.argv[1:] if argv is None else argv))
    with closed_stdout_exits_quietly():  # --help, --version
        args = parser.parse_args(head)
    if dest is not None:
        setattr(args, dest, passed_on)
    configure_progress(quiet=args.quiet)
    return run_handler(args.handler, args)


#: Commands that hand every argument after them to another program, and where they go.
PASSTHROUGH = {("bench",): "bench_args", ("db", "psql"): "psql_args"}


def split_passthrough(
    parser: argparse.ArgumentParser, argv: list[str]
) -> tuple[list[str], str | None, list[str]]:
    """``argv`` up to a pass-through command, the attribute for the rest, and the rest.

    ``bench`` hands everything after it to ``python -m bench``, and ``db psql``
    to psql, options included: argparse would refuse options that follow a
    subcommand (``regime-pg bench --quick``) or take psql's as its own.  The
    command words are found as argparse finds them, options skipped with their
    values, so ``compute --region bench`` runs no benchmark.

    >>> parser = build_parser()
    >>> split_passthrough(parser, ["-q", "bench", "--quick", "--output", "r.json"])
    (['-q', 'bench'], 'bench_args', ['--quick', '--output', 'r.json'])
    >>> split_passthrough(parser, ["db", "--data-dir", "psql", "psql", "-c", "select 1"])
    (['db', '--data-dir', 'psql', 'psql'], 'psql_args', ['-c', 'select 1'])
    >>> split_passthrough(parser, ["compute", "--region", "bench"])
    (['compute', '--region', 'bench'], None, [])
    """
    words: list[str] = []
    current = parser
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            break
        if arg.startswith("-"):
            i += _values_taken(current, arg)
            continue
        words.append(arg)
        dest = PASSTHROUGH.get(tuple(words))
        if dest is not None:
            return argv[:i], dest, argv[i:]
        current = _subparser(current, arg) or current
    return argv, None, []


def _values_taken(parser: argparse.ArgumentParser, option: str) -> int:
    """How many of the following arguments ``option`` takes (0 or 1: regime-pg's options)."""
    if "=" in option:
        return 0
    actions = parser._option_string_actions
    action = actions.get(option)
    if action is None and option.startswith("--"):  # argparse accepts unique prefixes
        matches = {a for name, a in actions.items() if name.startswith(option)}
        action = matches.pop() if len(matches) == 1 else None
    return 0 if action is None or action.nargs == 0 else 1


def _subparser(parser: argparse.ArgumentParser, word: str) -> argparse.ArgumentParser | None:
    """The parser of subcommand ``word`` under ``parser``, if it is one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and word in action.choices:
            found: argparse.ArgumentParser = action.choices[word]
            return found
    return None


if __name__ == "__main__":
    sys.exit(main())
