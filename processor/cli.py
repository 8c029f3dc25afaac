"""The ``benefits-ledger`` command. Every command takes --json for plain, parseable output.

This module builds the parser and runs a command. The commands live by group, each module readable
on its own: processor/cli_service.py (up, migrate, accept-log), cli_demo.py (demo), cli_input.py
(publish, ingest, deadletter), cli_books.py (balance, discrepancies, fsa, summary), and what they
share in cli_support.py; replay's, the roles' and the workbench's commands are wired in below.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from events.types import DISCREPANCY_KINDS
from processor import exits
from processor.cli_books import cmd_balance as cmd_balance
from processor.cli_books import cmd_discrepancies as cmd_discrepancies
from processor.cli_books import cmd_fsa as cmd_fsa
from processor.cli_books import cmd_summary as cmd_summary
from processor.cli_demo import cmd_demo as cmd_demo
from processor.cli_input import cmd_deadletter_list as cmd_deadletter_list
from processor.cli_input import cmd_deadletter_retry as cmd_deadletter_retry
from processor.cli_input import cmd_ingest as cmd_ingest
from processor.cli_input import cmd_publish as cmd_publish
from processor.cli_service import cmd_accept_log as cmd_accept_log
from processor.cli_service import cmd_migrate as cmd_migrate
from processor.cli_service import cmd_up as cmd_up
from processor.cli_support import load_settings
from processor.exits import EXIT_FINDINGS as EXIT_FINDINGS  # documented in processor/exits.py
from processor.exits import EXIT_OK as EXIT_OK
from processor.exits import EXIT_USAGE as EXIT_USAGE

# -- parser -----------------------------------------------------------------------------------------


def _common_options(*, suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the subcommand. After it they default to SUPPRESS, so a
    subcommand does not overwrite what was given before it with its own defaults."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON document on stdout",
                        default=argparse.SUPPRESS if suppress else False)
    common.add_argument("--database", help="database name on the configured server (e.g. benefits_ledger_demo)",
                        default=argparse.SUPPRESS if suppress else None)
    return common


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("benefits-ledger")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    common = _common_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="benefits-ledger", parents=[_common_options(suppress=False)],
        description="Premium and benefit accounts: an event-sourced ledger on Kafka and PostgreSQL.",
        epilog="exit codes: 0 ok, 1 findings, 2 usage, 3 a service unreachable, 4 data integrity stop",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", parents=[common], help="run the processor and the relay (Faust worker); migrates")
    up.add_argument("--role", choices=["all", "processor", "relay", "notifier"], default="all",
                    help="processor, relay, notifier (coordinators' digests) or processor and relay (default;"
                    " with the notifier too once an SMTP server is set)")
    up.add_argument("--loglevel", default=None, choices=["debug", "info", "warning", "error"],
                    help="level of the ledger's logs (default LEDGER_LOG_LEVEL, INFO)")
    up.set_defaults(fn=cmd_up)

    mig = sub.add_parser("migrate", parents=[common],
                         help="create the database if needed and apply the schema migrations")
    mig.set_defaults(fn=cmd_migrate)

    demo = sub.add_parser("demo", parents=[common], help="generate a program with known errors and check them")
    demo.add_argument("--members", type=int, default=2000, help="subscribers")
    demo.add_argument("--months", type=int, default=12)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--proration", choices=["whole_month", "daily"],
                      help="price the program and the ledger by whole months or by days (default: the plan's)")
    demo.add_argument("--wall-clock", action="store_true",
                      help="stamp recorded_at with the wall clock (default: the program's business time, so"
                           " replay --known-at answers on the demo database)")
    demo.set_defaults(fn=cmd_demo)

    pub = sub.add_parser("publish", parents=[common], help="publish events from a JSON lines file")
    pub.add_argument("file", help="JSON lines file, one wire event per line")
    pub.set_defaults(fn=cmd_publish)

    bal = sub.add_parser("balance", parents=[common], help="an account's coverage, months and balance")
    bal.add_argument("account", help="member account id (the Kafka key), e.g. M07000417")
    bal.set_defaults(fn=cmd_balance)

    dis = sub.add_parser("discrepancies", parents=[common], help="list discrepancies")
    dis.add_argument("--open", action="store_true", help="only those still open")
    dis.add_argument("--kind", choices=DISCREPANCY_KINDS)
    dis.add_argument("--account")
    dis.add_argument("--payer", help="only those naming this payer (an agency, or a direct-pay member)")
    dis.add_argument("--limit", type=int, default=1000)
    dis.set_defaults(fn=cmd_discrepancies)

    fsa = sub.add_parser("fsa", parents=[common], help="an account's flexible spending accounts by plan year")
    fsa.add_argument("account", help="member account id, e.g. M07000417")
    fsa.set_defaults(fn=cmd_fsa)

    summ = sub.add_parser("summary", parents=[common], help="totals and counts")
    summ.set_defaults(fn=cmd_summary)

    ing = sub.add_parser("ingest", parents=[common],
                         help="ingest X12 834/820, CSV or JSON lines files (format recognised by content)")
    ing.add_argument("files", nargs="+", metavar="FILE",
                     help="X12 834/820, CSV or JSON lines files (the format is recognised by content)")
    ing.add_argument("--dry-run", action="store_true", help="parse and report; publish nothing")
    ing.add_argument("--strict", action="store_true", help="publish nothing if any file has an error")
    ing.add_argument("--compare", action="store_true",
                     help="compare audit 834s (BGN08=4, INS03=030) with the ledger's enrollment (reads the database)")
    ing.add_argument("--ack", metavar="DIR",
                     help="write the X12 acknowledgments for the senders into DIR: a 999 per interchange"
                     " (accepted and rejected transaction sets, their errors) and a TA1 for envelope errors")
    ing.set_defaults(fn=cmd_ingest)

    dl = sub.add_parser("deadletter", parents=[common], help="records that could not be applied")
    dl_sub = dl.add_subparsers(dest="dl_command", required=True)
    dl_list = dl_sub.add_parser("list", parents=[common])
    dl_list.add_argument("--limit", type=int, default=1000)
    dl_list.set_defaults(fn=cmd_deadletter_list)
    dl_retry = dl_sub.add_parser("retry", parents=[common],
                                 help="re-submit dead letters (original bytes and key) after a fix")
    dl_retry.add_argument("--topic", help="only records from this topic")
    dl_retry.add_argument("--event-id", help="only this event")
    dl_retry.add_argument("--reason", help="only records whose reason contains this text")
    dl_retry.add_argument("--limit", type=int, default=100_000)
    dl_retry.add_argument("--dry-run", action="store_true", help="list what would be re-submitted")
    dl_retry.set_defaults(fn=cmd_deadletter_retry)

    acc = sub.add_parser("accept-log", parents=[common],
                         help="after a data integrity stop (LogReplaced): continue on the broker's log as a new log")
    acc.add_argument("--reason", default="accepted by the operator after a data integrity stop",
                     help="recorded with the retired log")
    acc.set_defaults(fn=cmd_accept_log)

    # replay and audit (issue 4): the commands live in replay/commands.py
    from replay.commands import add_audit_parsers

    add_audit_parsers(sub, common)

    from projections.roles import add_setup_roles_parser  # issue 12: the ledger is not a superuser

    add_setup_roles_parser(sub, common)

    # the workbench (issue 13): serve, user, demo --serve live in processor/entrypoints/web/commands.py
    from processor.entrypoints.web.commands import add_web_parsers

    add_web_parsers(sub, common, demo)
    return parser


def _run(args: argparse.Namespace) -> int:
    from processor.logs import configure

    settings = load_settings()  # an invalid setting is a usage error (exit 2) before anything starts
    # one format for every command; only long-running services log at INFO by default
    level = settings.log_level if args.command in ("up", "serve") or settings.log_level == "DEBUG" else "WARNING"
    configure("json" if args.json and args.command in ("up", "serve") else settings.log_format, level)
    return int(args.fn(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes (processor/exits.py): 0 ok, 1 findings, 2 usage, 3 a service unreachable, 4 a data
    integrity stop. Expected failures end with one line on stderr, never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return exits.run(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
