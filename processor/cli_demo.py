"""``benefits-ledger demo``: generate a program with known errors, run it through the ledger, and
report what was found against what was injected (processor/entrypoints/demo)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from events.money import format_cents as money
from processor import exits
from processor.cli_support import dsn_dbname, load_settings, print_json
from processor.exits import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE  # documented in processor/exits.py


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from processor.entrypoints.demo import DEMO_DATABASE, ProgramTooSmall, run_demo

    console = Console(stderr=True)
    settings = load_settings().model_copy(update={"demo_clock": not args.wall_clock})
    database = args.database or DEMO_DATABASE
    ledger_db = settings.database_name if settings.embedded_database else dsn_dbname(settings.database_url)
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
        print_json(asdict(report))
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
