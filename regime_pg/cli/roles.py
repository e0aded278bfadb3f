"""``regime-pg roles``: least-privilege grants for a reader and a writer role.

    regime-pg roles grant-reader ROLE [--schema S] [--dry-run] [--dsn DSN]
    regime-pg roles grant-writer ROLE [--schema S] [--dry-run] [--dsn DSN]
    regime-pg roles revoke ROLE [--writer-only] [--schema S] [--dry-run] [--dsn DSN]
    regime-pg roles audit [--schema S] [--dsn DSN]

The role must exist (regime-pg creates no roles: ``CREATE ROLE`` is the
administrator's step, see docs/hardening.md).  The grants run in one
transaction and are checked to be in effect; ``--dry-run`` prints the SQL
instead, one statement a line.  ``audit`` prints one finding a line and exits
1 when there is any.  Run it as the owner of regime-pg's objects (the role
that ran ``regime-pg migrate``) or a superuser.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from regime_pg import roles
from regime_pg.cli._common import CommandParser, add_dsn_argument
from regime_pg.connection import connect

log = logging.getLogger("regime_pg.cli")

#: CLI action -> what it does (help text).
_ACTIONS = {
    "grant-reader": "let ROLE compute prototypes and classify; it writes nothing",
    "grant-writer": "a reader that may also save and delete prototype sets",
    "revoke": "take away what grant-reader / grant-writer gave (schema USAGE excepted)",
}


def register(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Add the ``roles`` subcommand."""
    parser = commands.add_parser(
        "roles",
        help="grant or revoke least-privilege reader / writer access to an existing role",
        description=(
            "Grant an existing role what a regime-pg reader or writer needs, revoke it, or "
            "audit the database for what weakens regime-pg's security model. Creates no role."
        ),
    )
    actions = parser.add_subparsers(dest="roles_action", metavar="ACTION", required=True)
    for name, help_text in _ACTIONS.items():
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("role", metavar="ROLE", help="an existing PostgreSQL role")
        if name == "revoke":
            sub.add_argument(
                "--writer-only",
                action="store_true",
                help="take only the writer's privileges; ROLE stays a reader",
            )
        sub.add_argument(
            "--dry-run", action="store_true", help="print the SQL instead of running it"
        )
        _common_arguments(sub)
    audit = actions.add_parser(
        "audit",
        help="report what weakens regime-pg's security model (exit 1 if anything)",
        description="Report roles that may CREATE in the schemas regime-pg's functions "
        "search, functions that are SECURITY DEFINER or do not pin search_path, and "
        "privileges granted to PUBLIC on regime-pg's tables.",
    )
    _common_arguments(audit)
    parser.set_defaults(handler=run)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--schema", help="schema regime-pg is installed in (default: that of regimes)"
    )
    add_dsn_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Grant, revoke, or audit."""
    action = args.roles_action
    with connect(args.dsn) as conn:
        if action == "audit":
            findings = roles.audit(conn, args.schema)
            for finding in findings:
                sys.stdout.write(" ".join(finding.split()) + "\n")
            sys.stdout.flush()
            log.info("%d finding(s)", len(findings))
            return 1 if findings else 0
        if action == "revoke" and args.writer_only:
            action = "revoke-writer"
        if args.dry_run:
            for statement in roles.plan(conn, action, args.role, schema=args.schema):
                sys.stdout.write(statement + "\n")
            sys.stdout.flush()
            return 0
        done = _APPLY[action](conn, args.role, schema=args.schema)
    log.info("%s %s: %d statements", action, _shown(args.role), len(done))
    return 0


_APPLY = {
    "grant-reader": roles.grant_reader,
    "grant-writer": roles.grant_writer,
    "revoke-writer": roles.revoke_writer,
    "revoke": roles.revoke_all,
}


def _shown(name: str) -> str:
    """A role name for a message: printable, quoted."""
    return repr(name)


def main(argv: Sequence[str] | None = None) -> int:
    """``regime-pg roles ...`` on its own: ``python -m regime_pg.cli.roles grant-reader R``."""
    from regime_pg.cli._common import (
        add_quiet_everywhere,
        closed_stdout_exits_quietly,
        configure_progress,
        run_handler,
    )

    parser = CommandParser(prog="regime-pg")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(commands)
    add_quiet_everywhere(parser)
    with closed_stdout_exits_quietly():
        args = parser.parse_args(["roles", *(sys.argv[1:] if argv is None else argv)])
    configure_progress(quiet=args.quiet)
    return run_handler(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
