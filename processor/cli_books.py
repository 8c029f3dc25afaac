"""Reading the books: ``balance``, ``discrepancies``, ``fsa`` and ``summary``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import date

import msgspec

from events.money import format_cents as money
from processor.cli_support import load_settings, print_json
from processor.exits import EXIT_FINDINGS, EXIT_OK  # documented in processor/exits.py


def cmd_balance(args: argparse.Namespace) -> int:
    from processor.app import open_store

    with open_store(load_settings(), database=args.database) as store:
        bal = store.balance(args.account)
    if bal is None:
        if args.json:
            print_json({"account_id": args.account, "error": "unknown account"})
        else:
            print(f"unknown account {args.account}", file=sys.stderr)
        return EXIT_FINDINGS
    if args.json:
        print_json({"account_id": bal.account_id, "balance_cents": bal.balance_cents,
                     "coverages": [msgspec.structs.asdict(c) for c in bal.coverages],
                     "months": [msgspec.structs.asdict(m) for m in bal.months],
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
    with open_store(load_settings(), database=args.database) as store:
        rows = store.discrepancy_queue(query).rows
    if args.json:
        print_json([asdict(r) for r in rows])
        return EXIT_OK
    for r in rows:  # plain print: ids and explanations are shown literally, never read as markup
        month = f"{r.coverage_month:%Y-%m}" if r.coverage_month else "-"
        print(f"{r.discrepancy_id} {r.status:11} {r.kind:25} {r.account_id:14} {month:7} {r.agency_id or '-':10}"
              f" expected {money(r.expected_cents):>12} actual {money(r.actual_cents):>12}  {r.actor}: {r.explanation}")
    print(f"{len(rows)} discrepancies", file=sys.stderr)
    return EXIT_OK


def cmd_fsa(args: argparse.Namespace) -> int:
    from processor.app import open_store

    with open_store(load_settings(), database=args.database) as store:
        rows = store.fsa_accounts(args.account)
        state = store.load_accounts([args.account]).get(args.account)
    # every adjudicated claim, from the account's snapshot (the claims topic has the same decisions)
    claims = sorted(state.fsa.claims.values(), key=lambda c: (c.submitted_on or date.min, c.claim_id)) if (
        state is not None and state.fsa is not None) else []
    if args.json:
        print_json({"account_id": args.account, "fsa_accounts": [asdict(r) for r in rows],
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

    with open_store(load_settings(), database=args.database) as store:
        summary = store.summary()
    data = asdict(summary)
    if args.json:
        print_json(data)
    else:
        from rich.console import Console

        from processor.tables import print_table, summary_tables

        out = Console()
        for table in summary_tables(summary):
            print_table(table, out)
    return EXIT_OK
