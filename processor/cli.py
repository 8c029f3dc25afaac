"""The ``benefits-ledger`` command. Every command takes --json for plain, parseable output."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

import msgspec

from events.money import format_cents as money
from events.types import DISCREPANCY_KINDS
from processor import exits
from processor.exits import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE  # documented in processor/exits.py


def _json_default(value: object) -> object:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, default=_json_default, sort_keys=False) + "\n")


def _dsn_dbname(dsn: str | None) -> str | None:
    import psycopg

    return psycopg.conninfo.conninfo_to_dict(dsn).get("dbname") if dsn else None  # type: ignore[return-value]


def _settings() -> Any:
    from processor.settings import Settings

    return Settings()


# -- commands ---------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from processor.entrypoints.demo import DEMO_DATABASE, ProgramTooSmall, run_demo

    console = Console(stderr=True)
    settings = _settings().model_copy(update={"demo_clock": not args.wall_clock})
    database = args.database or DEMO_DATABASE
    ledger_db = settings.database_name if settings.embedded_database else _dsn_dbname(settings.database_url)
    if database == ledger_db:  # the demo drops and recreates its database: never the ledger's own
        raise exits.UsageError(f"demo recreates --database {database}, which is the ledger's own database;"
                               " name another one (default benefits_ledger_demo)")
    progress = Progress(
        TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=args.json or not console.is_terminal,
    )
    task = None

    def on_start(program: Any) -> None:
        nonlocal task
        records = program.events + (settings.partitions - 1) * sum(
            1 for _, phase in program.phases for e in phase if type(e).BROADCAST
        ) + len(program.exact_duplicates) + len(program.raw_records) + program.derived
        task = progress.add_task("records applied", total=records)

    def step(received: int) -> None:
        if task is not None:
            progress.update(task, completed=received)

    try:
        with progress:
            report = run_demo(settings, members=args.members, months=args.months, seed=args.seed,
                              proration=args.proration, progress=step, on_start=on_start, database=database)
    except ProgramTooSmall as exc:  # raised before anything is started
        print(f"benefits-ledger demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        _print_json(asdict(report))
    else:
        out = Console()
        table = Table(title=f"benefits-ledger demo: {args.members} subscribers, {args.months} months, seed {args.seed}")
        table.add_column("measure")
        table.add_column("value", justify="right")
        rows: list[tuple[str, str]] = [
            ("members (subscribers and dependents)", f"{report.members:,}"),
            ("accounts", f"{report.accounts:,}"),
            ("coverage months", f"{report.coverage_months:,}"),
            ("billed", money(report.billed_cents)),
            ("paid", money(report.paid_cents)),
            ("outstanding", money(report.outstanding_cents)),
            ("credits", money(report.credits_cents)),
            ("unapplied cash", money(report.unapplied_cents)),
            ("records published", f"{report.events_published:,}"),
            ("events the ledger posted (cash applied, remittance lines)", f"{report.events_derived:,}"),
            ("applied / duplicates / dead-lettered",
             f"{report.events_applied:,} / {report.events_duplicate:,} / {report.events_dead_lettered:,}"),
            ("refunds issued / returned", f"{report.refunds_issued} / {report.refunds_returned}"),
            ("discrepancies expected / detected", f"{report.discrepancies_expected} / {report.discrepancies_detected}"),
            ("discrepancies by status", " / ".join(f"{k} {v}" for k, v in report.discrepancies_by_status.items())),
            ("missed / spurious", f"{report.missed} / {report.spurious}"),
            ("rows ending in another status", f"{report.status_mismatched}"),
            ("FSA claims expected / adjudicated", f"{report.claims_expected:,} / {report.claims_adjudicated:,}"),
            ("FSA claims mismatched", f"{report.claims_mismatched}"),
            ("pending FSA claims paid later", f"{report.claim_payments}"),
            ("discrepancy amounts checked / mismatched",
             f"{report.discrepancy_amounts_checked:,} / {report.amounts_mismatched}" + "".join(
                 f" ({kind} {n})" for kind, n in report.amounts_mismatched_by_kind.items())),
            ("member-months checked / balances mismatched",
             f"{report.member_months_checked:,} / {report.balances_mismatched}"),
            ("payers' unapplied cash checked / mismatched", f"{report.payers_checked} / {report.unapplied_mismatched}"),
            ("proration", report.proration),
            ("events per second", f"{report.events_per_second:,.0f}"),
            ("elapsed", f"{report.elapsed_seconds:.1f} s"),
        ]
        for k, v in rows:
            table.add_row(k, v)
        out.print(table)
        kinds = Table(title="discrepancies by kind")
        kinds.add_column("kind")
        kinds.add_column("count", justify="right")
        for kind, n in report.discrepancies_by_kind.items():
            kinds.add_row(kind, str(n))
        out.print(kinds)
        decisions = Table(title="FSA claims by decision")
        decisions.add_column("decision")
        decisions.add_column("count", justify="right")
        for decision, n in report.claims_by_decision.items():
            decisions.add_row(decision, str(n))
        out.print(decisions)
        for m in report.missed_examples:
            out.print(f"[red]missed[/red] {m}")
        for s in report.spurious_examples:
            out.print(f"[red]spurious[/red] {s}")
        for x in report.mismatch_examples:
            out.print(f"[red]mismatch[/red] {x}")
        for x in report.amount_examples:
            out.print(f"[red]amounts[/red] {escape(x)}", highlight=False)
        for x in report.balance_examples:
            out.print(f"[red]balance[/red] {escape(x)}", highlight=False)
        for x in report.unapplied_examples:
            out.print(f"[red]unapplied[/red] {escape(x)}", highlight=False)
        out.print(f"inspect it: benefits-ledger --database {report.database} discrepancies --open")
    return EXIT_OK if report.ok() else EXIT_FINDINGS


def cmd_up(args: argparse.Namespace) -> int:
    import os
    import signal

    from processor.app import faust_app, open_ledger
    from processor.health import OpsServer
    from processor.logs import logging_config
    from processor.retry import quiet_repeats
    from processor.stops import LedgerStop

    settings = _settings()
    if settings.demo_clock:
        raise exits.UsageError("LEDGER_DEMO_CLOCK is a demo-only setting: a ledger in service records events"
                               " at the time it accepts them; unset it")
    process = args.role in ("all", "processor")
    relay = args.role in ("all", "relay")
    # the notifier runs on its own role, or with all of them once an SMTP server is configured
    notify = args.role == "notifier" or (args.role == "all" and settings.notifier.smtp_host is not None)
    if args.role == "notifier" and settings.notifier.smtp_host is None:
        print("error: --role notifier needs an SMTP server: set LEDGER_NOTIFIER__SMTP_HOST", file=sys.stderr)
        return EXIT_USAGE
    level = args.loglevel.upper() if args.loglevel else settings.log_level
    stopped: list[LedgerStop] = []

    def on_stop(reason: LedgerStop) -> None:
        """A reason to stop (not a bug): end the worker as SIGTERM would, and exit with its code."""
        if not stopped:
            stopped.append(reason)
            os.kill(os.getpid(), signal.SIGTERM)

    with open_ledger(settings, database=args.database) as ledger:
        logging.getLogger("benefits_ledger").warning(
            "ledger up: broker %s, log %s, role %s", ledger.bootstrap, ledger.log_id, args.role
        )
        health = ledger.new_health()
        ops = OpsServer(health, settings.metrics_host, settings.metrics_port).start() if (
            settings.metrics_port is not None) else None
        app = faust_app(ledger, relay=relay, process=process, notify=notify, on_stop=on_stop)
        from faust.worker import Worker

        # The worker installs the same one-format handler (Faust's own would add colour codes).
        # --json: a service's output is its log, so JSON lines
        worker = Worker(app, loglevel=level, quiet=True, redirect_stdouts=False,
                        logging_config=logging_config("json" if args.json else settings.log_format, level))
        quiet_repeats()  # a broker that is gone makes the Kafka clients log an error per retry
        code = EXIT_OK
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            if ops is not None:
                ops.stop()
    if stopped:
        raise stopped[0]  # exits.run prints it as one line and exits with its code (3 or 4)
    if ledger.failure is not None:
        raise ledger.failure  # exits.run turns a lost service into 3; a bug keeps its traceback
    return code


def cmd_accept_log(args: argparse.Namespace) -> int:
    """Continue on a replaced log (LogReplaced) as a new log of the same cluster, from offset 0."""
    from processor.app import open_store
    from processor.embedded import broker_cluster_id
    from processor.kafka_clients import kafka_python_options

    settings = _settings()
    if settings.kafka_bootstrap_servers is None:
        print("error: the embedded broker starts a new log each time `up` starts: there is nothing to accept",
              file=sys.stderr)
        return EXIT_USAGE
    exits.probe_broker(settings.kafka_bootstrap_servers, settings.connect_timeout_s)
    cluster = broker_cluster_id(settings.kafka_bootstrap_servers, **kafka_python_options(settings),
                                bootstrap_timeout_ms=int(settings.connect_timeout_s * 1000))
    with open_store(settings, database=args.database) as store:
        retired, new = store.start_new_log(cluster, args.reason)
    result = {"cluster_id": cluster, "retired_log_id": retired, "log_id": new}
    if args.json:
        _print_json(result)
    else:
        print(f"log {retired} retired (its positions and archive stay as they are); the ledger now reads cluster"
              f" {cluster} as log {new}, from offset 0 of every partition: start `benefits-ledger up`")
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    from events import codec
    from processor.app import publisher, running_embedded_broker
    from processor.tables import ProgressPublisher, progress_bar

    settings = _settings()
    bootstrap = settings.kafka_bootstrap_servers or running_embedded_broker(settings)
    if bootstrap is None:
        print("error: no broker: set LEDGER_KAFKA_BOOTSTRAP_SERVERS or start `benefits-ledger up` first",
              file=sys.stderr)
        return EXIT_USAGE
    path = Path(args.file)
    errors: list[dict[str, Any]] = []
    events = []
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                events.append(codec.decode_input(line))
            except codec.EventDecodeError as exc:
                errors.append({"file": str(path), "line": lineno, "field": exc.field, "reason": exc.reason})
    with progress_bar(not args.json) as bar, ProgressPublisher(publisher(settings, bootstrap), bar) as pub:
        records = pub.publish(events)
    result = {"file": str(path), "events": len(events), "records": records, "errors": errors}
    if args.json:
        _print_json(result)
    else:
        for e in errors:
            print(f"{e['file']}:{e['line']}: {e['field'] or '-'}: {e['reason']}", file=sys.stderr)
        print(f"published {len(events)} events ({records} records) from {path}; {len(errors)} lines rejected")
    return EXIT_FINDINGS if errors else EXIT_OK


def cmd_balance(args: argparse.Namespace) -> int:
    from processor.app import open_store

    with open_store(_settings(), database=args.database) as store:
        bal = store.balance(args.account)
    if bal is None:
        if args.json:
            _print_json({"account_id": args.account, "error": "unknown account"})
        else:
            print(f"unknown account {args.account}", file=sys.stderr)
        return EXIT_FINDINGS
    if args.json:
        _print_json({"account_id": bal.account_id, "balance_cents": bal.balance_cents,
                     "coverages": [asdict(c) for c in bal.coverages], "months": [asdict(m) for m in bal.months],
                     "open_discrepancies": [asdict(d) for d in bal.open_discrepancies]})
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    from processor.tables import print_table

    out = Console()
    cov = Table(title=f"coverage of {bal.account_id}")
    for col in ("member", "relationship", "line", "plan", "tier", "status", "begin", "end", "agency"):
        cov.add_column(col, no_wrap=True)
    for c in bal.coverages:
        cov.add_row(c.member_id, c.relationship, c.coverage_line, c.plan, c.tier, c.status, str(c.begin_on),
                    str(c.end_on or ""), c.agency_id)
    print_table(cov, out)
    months = Table(title="months")
    for col in ("month", "expected", "employee", "employer", "billed", "adjusted", "paid", "refunded", "unapplied",
                "balance", "due", "post-tax", "imputed"):
        months.add_column(col, justify="right", no_wrap=True)  # an amount is never cut (print_table)

    def known(amount: int | None) -> str:
        return money(amount) if amount is not None else "?"

    for m in bal.months:
        months.add_row(f"{m.coverage_month:%Y-%m}", known(m.expected_cents), known(m.employee_share_cents),
                       known(m.employer_share_cents),
                       money(m.billed_cents), money(m.adjusted_cents), money(m.paid_cents), money(m.refunded_cents),
                       money(m.unapplied_cents), money(m.balance_cents), str(m.due_on or ""),
                       known(m.post_tax_cents), known(m.imputed_income_cents))
    print_table(months, out)
    out.print(f"balance due: {money(bal.balance_cents)}")
    for d in bal.open_discrepancies:
        out.print(f"open {d.kind} [{d.discrepancy_id}]: {d.explanation} -> {d.actor}: {d.action}", markup=False)
    return EXIT_OK


def cmd_discrepancies(args: argparse.Namespace) -> int:
    from processor.app import open_store
    from projections.model import QueueQuery

    query = QueueQuery(status="open" if args.open else None, kind=args.kind, account_id=args.account,
                       payer_id=args.payer, sort="account", limit=args.limit)
    with open_store(_settings(), database=args.database) as store:
        rows = store.discrepancy_queue(query).rows
    if args.json:
        _print_json([asdict(r) for r in rows])
        return EXIT_OK
    for r in rows:  # plain print: ids and explanations are shown literally, never read as markup
        month = f"{r.coverage_month:%Y-%m}" if r.coverage_month else "-"
        print(f"{r.discrepancy_id} {r.status:11} {r.kind:25} {r.account_id:14} {month:7} {r.agency_id or '-':10}"
              f" expected {money(r.expected_cents):>12} actual {money(r.actual_cents):>12}  {r.actor}: {r.explanation}")
    print(f"{len(rows)} discrepancies", file=sys.stderr)
    return EXIT_OK


def cmd_fsa(args: argparse.Namespace) -> int:
    from processor.app import open_store

    with open_store(_settings(), database=args.database) as store:
        rows = store.fsa_accounts(args.account)
        state = store.load_accounts([args.account]).get(args.account)
    # every adjudicated claim, from the account's snapshot (the claims topic has the same decisions)
    claims = sorted(state.fsa.claims.values(), key=lambda c: (c.submitted_on or date.min, c.claim_id)) if (
        state is not None and state.fsa is not None) else []
    if args.json:
        _print_json({"account_id": args.account, "fsa_accounts": [asdict(r) for r in rows],
                     "claims": [msgspec.to_builtins(c) for c in claims]})
        return EXIT_OK
    if not rows:
        print(f"no flexible spending accounts on {args.account}", file=sys.stderr)
        return EXIT_OK
    header = ("year", "type", "member", "election", "contributed", "reimbursed", "carryover in",
              "carryover out", "available", "status")
    lines = [header] + [
        (str(r.plan_year), r.account_type, r.member_id, money(r.election_cents), money(r.contributed_cents),
         money(r.reimbursed_cents), money(r.carryover_in_cents), money(r.carryover_out_cents),
         money(r.available_cents), "closed" if r.closed else "open")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) if i in (1, 2, 9) else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip())
    if claims:
        print()
        for c in claims:
            print(f"claim {c.claim_id} ({c.plan_year} {c.account_type}, service {c.service_date or '?'},"
                  f" submitted {c.submitted_on or '?'}): {c.decision} {money(c.approved_cents)} of"
                  f" {money(c.requested_cents)}" + (f"; {c.reason}" if c.reason else ""))
    return EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    from processor.app import open_store

    with open_store(_settings(), database=args.database) as store:
        summary = store.summary()
    data = asdict(summary)
    if args.json:
        _print_json(data)
    else:
        from rich.console import Console

        from processor.tables import print_table, summary_tables

        out = Console()
        for table in summary_tables(summary):
            print_table(table, out)
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create the database if needed and apply the migrations (reading commands never do)."""
    from processor.app import open_store

    with open_store(_settings(), database=args.database, migrate=True) as store:
        versions = store.applied_migrations() if hasattr(store, "applied_migrations") else []
        dsn = getattr(store, "dsn", "")
    import psycopg

    name = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname") if dsn else None
    if args.json:
        _print_json({"database": name, "migrations": versions})
    else:
        print(f"database {name}: {len(versions)} migrations applied, the last {versions[-1] if versions else '-'}")
    return EXIT_OK


def cmd_deadletter_list(args: argparse.Namespace) -> int:
    from processor.app import open_store

    with open_store(_settings(), database=args.database) as store:
        rows = store.dead_letters(limit=args.limit)
    if args.json:
        _print_json([asdict(r) for r in rows])
        return EXIT_OK
    for r in rows:
        print(f"{r.topic}[{r.partition}]@{r.offset} {r.event_id or '-'} {r.field or '-'}: {r.reason}")
    print(f"{len(rows)} dead letters", file=sys.stderr)
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    import contextlib

    from events.adapters.ingest import ingest
    from processor.app import publisher, running_embedded_broker
    from processor.keys import KeyRequired, member_id_key
    from processor.tables import ProgressPublisher, progress_bar, spinner

    settings = _settings()
    try:
        member_id_key(settings)  # pseudonyms need a real key: refuse before reading any file
    except KeyRequired as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bootstrap = None
    if not args.dry_run:
        bootstrap = settings.kafka_bootstrap_servers or running_embedded_broker(settings)
        if bootstrap is None:
            print("error: no broker: set LEDGER_KAFKA_BOOTSTRAP_SERVERS or start `benefits-ledger up` first"
                  " (or use --dry-run)", file=sys.stderr)
            return EXIT_USAGE
    with contextlib.ExitStack() as stack:
        ledger: Any = None
        agency_accounts: Any = None
        if args.compare:
            from processor.app import open_store

            store = stack.enter_context(open_store(settings, database=args.database))

            def current_coverages(accounts: list[str]) -> dict[str, Any]:
                balances = {a: store.balance(a) for a in accounts}
                return {a: b.coverages for a, b in balances.items() if b is not None}

            ledger = current_coverages
            agency_accounts = store.agency_accounts
        bar = stack.enter_context(progress_bar(not args.json))
        stack.enter_context(spinner(bar, f"reading {len(args.files)} file(s)"))
        report = ingest(args.files, settings, dry_run=args.dry_run, strict=args.strict, ledger=ledger,
                        agency_accounts=agency_accounts,
                        publisher=lambda: ProgressPublisher(publisher(settings, bootstrap or ""), bar),
                        ack_dir=Path(args.ack) if args.ack else None)
    if args.json:
        _print_json(report.to_json())
    else:
        out, err = report.text_lines()
        for line in err:
            print(line, file=sys.stderr)
        for line in out:
            print(line)
    return EXIT_FINDINGS if report.errors else EXIT_OK


def cmd_deadletter_retry(args: argparse.Namespace) -> int:
    from events.adapters.deadletter import resubmit, select
    from processor.app import open_store, publisher, running_embedded_broker

    settings = _settings()
    with open_store(settings, database=args.database) as store:
        rows = select(store.dead_letters(limit=args.limit), topic=args.topic, event_id=args.event_id,
                      reason=args.reason)
    if args.dry_run:
        done = [{"topic": r.topic, "partition": r.partition, "offset": r.offset, "event_id": r.event_id,
                 "reason": r.reason} for r in rows]
    else:
        bootstrap = settings.kafka_bootstrap_servers or running_embedded_broker(settings)
        if bootstrap is None:
            print("error: no broker: set LEDGER_KAFKA_BOOTSTRAP_SERVERS or start `benefits-ledger up` first",
                  file=sys.stderr)
            return EXIT_USAGE
        with publisher(settings, bootstrap) as pub:
            done = [r.to_dict() for r in resubmit(rows, pub)]
    if args.json:
        _print_json({"dry_run": args.dry_run, "resubmitted": done})
    else:
        for d in done:
            print(f"{d['topic']}[{d['partition']}]@{d['offset']} {d['event_id'] or '-'}: was {d['reason']}")
        verb = "would resubmit" if args.dry_run else "resubmitted"
        print(f"{verb} {len(done)} dead letters", file=sys.stderr)
    return EXIT_OK


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

    settings = _settings()  # an invalid setting is a usage error (exit 2) before anything starts
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


