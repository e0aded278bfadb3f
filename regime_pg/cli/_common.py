"""What every subcommand shares: one-line errors, progress, dates, output."""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import importlib.metadata
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import psycopg

from regime_pg.atomic import cannot_write, write_atomically
from regime_pg.errors import (
    InvalidWindowError,
    PrototypeSetExistsError,
    RegimePgError,
    translate,
)
from regime_pg.prototypes import parse_date
from regime_pg.sets import PrototypeSet

Handler = Callable[[argparse.Namespace], int]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: 128 + SIGPIPE: what a shell reports for a tool that SIGPIPE ended (``yes | head -1``).
EXIT_STDOUT_CLOSED = 141


class UsageError(RegimePgError):
    """The command line is wrong on its own (exit 2), found before anything is read or written.

    Flags that go together or exclude each other, and values of the wrong form
    (``--window``, labels, a reversed date range), which argparse cannot check.
    """


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``regime-pg: error: ...``."""

    def error(self, message: str) -> NoReturn:
        # A subcommand's prog is "regime-pg compute": keep the prefix every error shares.
        one_line = " ".join(message.split())
        sys.stderr.write(f"{self.prog.split()[0]}: error: {one_line}\n")
        raise SystemExit(EXIT_USAGE)


def add_quiet_everywhere(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` on every subcommand and action below ``parser``, at any depth.

    So ``-q`` is accepted wherever it is typed among the options (``regime-pg
    -q sets list``, ``sets -q list``, ``sets list -q``).  Its default is
    SUPPRESS, so a parser further down never undoes a ``-q`` given earlier.
    """
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for subparser in action.choices.values():
            if "--quiet" not in subparser._option_string_actions:
                subparser.add_argument(
                    "-q",
                    "--quiet",
                    action="store_true",
                    default=argparse.SUPPRESS,
                    help="no progress messages on stderr",
                )
            add_quiet_everywhere(subparser)


def package_version() -> str:
    """The installed regime-pg's version (its distribution metadata)."""
    try:
        return importlib.metadata.version("regime-pg")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


def configure_progress(quiet: bool) -> None:
    """Progress messages (logging INFO) to stderr, unless quiet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("regime-pg: %(message)s"))
    root = logging.getLogger("regime_pg")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def run_handler(handler: Handler, args: argparse.Namespace) -> int:
    """Run a subcommand, turning every expected failure into one line on stderr."""
    try:
        code = handler(args)
        sys.stdout.flush()  # now, not at exit: a closed stdout is handled below
        return code
    except BrokenPipeError:
        return stdout_closed()
    except UsageError as exc:
        return fail(str(exc), EXIT_USAGE)
    except RegimePgError as exc:
        return fail(str(exc))
    except psycopg.Error as exc:
        mapped = translate(exc)
        return fail(_first_line(str(mapped)))
    except OSError as exc:
        return fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        fail("interrupted")
        return EXIT_INTERRUPTED


def stdout_closed() -> int:
    """The reader of stdout went away (``regime-pg sets list | head -1``): exit quietly.

    Python's idiom (the signal module's "Note on SIGPIPE"): point stdout at
    /dev/null, so the flush at exit cannot fail again, and print nothing.  The
    status is 141, the shell's for a tool that SIGPIPE ended, so that ``set -o
    pipefail`` treats regime-pg like ``yes`` or ``seq``.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # stdout has no file descriptor (captured in tests)
        pass
    return EXIT_STDOUT_CLOSED


@contextmanager
def closed_stdout_exits_quietly() -> Iterator[None]:
    """Around argument parsing: ``--help | head -1`` exits 141, without a traceback.

    argparse prints help and exits (SystemExit); stdout is flushed here, before
    leaving, so that a closed pipe is seen here rather than at interpreter exit.
    """
    try:
        try:
            yield
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        raise SystemExit(stdout_closed()) from None


def fail(message: str, code: int = EXIT_FAILURE) -> int:
    """Print ``regime-pg: error: message`` on one line; return ``code``."""
    one_line = " ".join(message.split())
    sys.stderr.write(f"regime-pg: error: {one_line}\n")
    return code


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unexpected database error"


def date_arg(text: str) -> dt.date:
    """argparse type: a date written exactly as YYYY-MM-DD."""
    try:
        return parse_date(text, "date")
    except InvalidWindowError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int_arg(text: str) -> int:
    """argparse type: a whole number, at least 1.

    >>> positive_int_arg("5")
    5
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def temperature_arg(text: str) -> float:
    """argparse type: a temperature, a positive finite number (the server's rule).

    >>> temperature_arg("2.5")
    2.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"temperature must be a positive finite number, got {text!r}"
        )
    return value


def add_dsn_argument(parser: argparse.ArgumentParser) -> None:
    """``--dsn``, defaulting to $REGIME_PG_DSN, else the embedded server."""
    parser.add_argument(
        "--dsn",
        help="PostgreSQL DSN (default: $REGIME_PG_DSN, else the embedded server)",
    )


def emit(text: str, output: Path | None) -> None:
    """Write ``text`` to ``output`` atomically, or to stdout when no file is given; say so."""
    write_output(text, output)
    if output is not None:
        logging.getLogger("regime_pg.cli").info("wrote %s", output)


def write_output(text: str, output: Path | None) -> None:
    """Write ``text`` to ``output`` atomically (whole or not at all), or to stdout."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_file(output, text)


def write_file(output: Path, data: str | bytes) -> None:
    """Replace ``output`` with ``data`` atomically; an error names the user's path."""
    try:
        write_atomically(output, data)
    except OSError as exc:
        raise cannot_write(output, exc) from exc


def check_writable(output: Path) -> None:
    """Fail now, as writing ``output`` would later: before anything else is written.

    Its directory must exist and be writable, and ``output`` must not be a
    directory.  (A check, not a promise: the write itself still reports.)
    """
    directory = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        problem = errno.EISDIR
    elif not directory.exists():
        problem = errno.ENOENT
    elif not directory.is_dir():
        problem = errno.ENOTDIR
    elif not os.access(directory, os.W_OK | os.X_OK):
        problem = errno.EACCES
    else:
        return
    raise cannot_write(output, OSError(problem, os.strerror(problem)))


def add_temperature_arguments(parser: argparse.ArgumentParser) -> None:
    """``--temperature T`` or ``--fit-temperature``, for commands that save a set."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--temperature", type=temperature_arg, help="softmax temperature to store (default: 1.0)"
    )
    group.add_argument(
        "--fit-temperature",
        action="store_true",
        help="fit the temperature on the calibration windows (maximum likelihood)",
    )


def temperature_from_args(args: argparse.Namespace) -> float | None:
    """The temperature to save: None asks the server to fit it."""
    if args.fit_temperature:
        return None
    return 1.0 if args.temperature is None else float(args.temperature)


@contextmanager
def saving_new_set(name: str) -> Iterator[None]:
    """Around saving the set ``name``: a taken name's hint names the CLI command.

    The server's hint names the SQL function ``delete_regime_prototype_set``;
    on the command line it is ``regime-pg sets delete NAME``.  (A taken name
    follows the set name rule, letters, digits, ``._-``: safe to print as is.)
    """
    try:
        yield
    except PrototypeSetExistsError as exc:
        raise PrototypeSetExistsError(
            f"prototype set {name!r} already exists (hint: A saved set never changes: save the "
            f"new version under a new name, or delete it first: regime-pg sets delete {name})"
        ) from exc


def report_saved(stored: PrototypeSet) -> None:
    """Say on stderr (progress) which set was saved, and how its temperature was chosen."""
    log = logging.getLogger("regime_pg.cli")
    fit = stored.info.fit
    if fit is None:
        log.info("saved set %s (temperature %g)", stored.name, stored.temperature)
        return
    log.info(
        "saved set %s: fitted temperature %.4g (log-loss %.4g, %.4g at T=1, %d calibration "
        "dates%s)",
        stored.name,
        fit.temperature,
        fit.log_loss,
        fit.log_loss_at_1,
        fit.n,
        ", separable" if fit.separable else "",
    )


def printable(text: str) -> str:
    """``text`` with control characters escaped, safe to print into a terminal.

    >>> printable("US\\n\\x1b[2J")
    'US\\\\x0a\\\\x1b[2J'
    """
    return "".join(
        ch if ch.isprintable() else (f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        for ch in text
    )
