"""The ``worksheet`` and ``notices`` commands (registered by replay/commands.py into processor/cli.py).

Exit codes: 0 done; 1 the command ran and found something not clean (a worksheet with an unexplained
remainder, an unknown payer or account); 2 bad usage (an unreadable month or time, a binary format
without --out).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from replay.commands import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, _dsn, _progress, dumps, write_output


def _known_at(args: argparse.Namespace, tz: str) -> Any:
    from replay.statements import parse_known_at

    return parse_known_at(args.known_at, tz=tz)


def cmd_worksheet(args: argparse.Namespace) -> int:
    from replay.books import load_books
    from replay.statements import TimeParseError
    from replay.worksheet import WorksheetError, parse_month, worksheet

    fmt = "json" if args.json and args.format is None else (args.format or "table")
    if fmt in ("xlsx", "pdf") and not args.out:
        print(f"error: --format {fmt} writes a file: give --out FILE", file=sys.stderr)
        return EXIT_USAGE
    try:
        month = parse_month(args.month)
    except WorksheetError as exc:
        print(f"error: --month: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with _dsn(args) as (dsn, settings):
        try:
            known_at = _known_at(args, settings.plan.timezone)
        except TimeParseError as exc:
            print(f"error: --known-at: {exc}", file=sys.stderr)
            return EXIT_USAGE
        with _progress(fmt == "table" or args.out is not None, None, "replaying") as step:
            books = load_books(dsn, settings.plan, known_at=known_at, progress=step, verify=fmt in ("html", "pdf"))
    ws = worksheet(books, args.payer, month)
    if not ws.remittances and not ws.members and not ws.exceptions:
        print(f"payer {args.payer} has nothing for {month:%Y-%m} in the books as known at {known_at.isoformat()}",
              file=sys.stderr)
        return EXIT_FINDINGS
    data: str | bytes
    if fmt == "json":
        data = dumps(ws.to_json()) + "\n"
    elif fmt == "csv":
        data = ws.to_csv()
    elif fmt == "xlsx":
        data = ws.to_xlsx()
    elif fmt in ("html", "pdf"):
        from replay.documents import html_to_pdf, render, worksheet_context

        page = render("worksheet.html", **worksheet_context(books, ws))
        data = html_to_pdf(page) if fmt == "pdf" else page
    else:
        data = worksheet_table(ws)
    done = write_output(data, args.out, f"{fmt}, {args.payer} {month:%Y-%m}, known at {known_at.isoformat()}")
    if done != EXIT_OK:
        return done
    if not ws.balanced:
        print(f"UNEXPLAINED: {args.payer} {month:%Y-%m} leaves {ws.unexplained_cents} cents unexplained",
              file=sys.stderr)
        return EXIT_FINDINGS
    return EXIT_OK


def worksheet_table(ws: Any) -> str:
    import io

    from rich.console import Console
    from rich.table import Table

    from events.money import format_cents as money

    console = Console(file=io.StringIO(), width=150, record=True)
    console.print(f"reconciliation worksheet {ws.payer_id} {ws.month:%Y-%m}, as known at {ws.known_at.isoformat()}")
    s = Table(title="summary", show_header=False)
    s.add_column("measure")
    s.add_column("amount", justify="right")
    for label, cents in (("billed", ws.billed_cents), ("adjustments", ws.adjustments_cents),
                         ("remitted", ws.remitted_cents), ("remittance lines", ws.lines_cents),
                         ("applied", ws.applied_cents), ("unapplied", ws.unapplied_cents),
                         ("variance (remitted - billed)", ws.variance_cents),
                         ("explained by exceptions", sum(e.cents for e in ws.exceptions)),
                         ("explained by rules and events", sum(i.cents for i in ws.rule_items)),
                         ("UNEXPLAINED" if not ws.balanced else "unexplained", ws.unexplained_cents)):
        s.add_row(label, money(cents))
    console.print(s)
    r = Table(title="remittances")
    for col in ("remittance", "method", "trace", "date", "total", "lines total", "lines", "received"):
        r.add_column(col, justify="right" if col in ("total", "lines total", "lines", "received") else "left")
    for x in ws.remittances:
        r.add_row(x.remittance_id, x.method or "", x.trace_number or "", str(x.payment_date or ""),
                  money(x.total_cents), money(x.lines_total_cents), str(x.line_count), money(x.received_lines_cents))
    console.print(r)
    t = Table(title="reconciling items")
    for col in ("item", "account", "amount", "explained by", "description"):
        t.add_column(col, justify="right" if col == "amount" else "left")
    for i in ws.items:
        t.add_row(i.kind, i.account_id or "", money(i.cents), i.discrepancy_id or i.rule or "UNEXPLAINED",
                  i.description)
    console.print(t)
    e = Table(title="exceptions")
    for col in ("discrepancy", "kind", "status", "account", "explains", "who", "action or resolution"):
        e.add_column(col, justify="right" if col == "explains" else "left")
    for x in ws.exceptions:
        e.add_row(x.discrepancy_id, x.kind, x.status, x.account_id, money(x.cents), x.actor, x.resolution or x.action)
    console.print(e)
    return console.export_text()


def cmd_notices(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime
    from pathlib import Path

    from replay.books import load_books
    from replay.documents import html_to_pdf
    from replay.notices import notices_for
    from replay.statements import TimeParseError

    out_dir = Path(args.out)
    with _dsn(args) as (dsn, settings):
        try:
            known_at = _known_at(args, settings.plan.timezone)
        except TimeParseError as exc:
            print(f"error: --known-at: {exc}", file=sys.stderr)
            return EXIT_USAGE
        with _progress(not args.json, None, "replaying") as step:
            # no verification stamp: a notice must render the same whenever it is made again from R
            books = load_books(dsn, settings.plan, known_at=known_at, progress=step)
    if args.account is not None and args.account not in books.accounts:
        print(f"account {args.account} is not in the archive as known at {known_at.isoformat()}", file=sys.stderr)
        return EXIT_FINDINGS
    notices = notices_for(books, payer_id=args.payer, account_id=args.account)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for n in notices:
        path = out_dir / f"{n.notice_id}.{args.format}"
        if args.format == "pdf":
            path.write_bytes(html_to_pdf(n.html))
        else:
            path.write_text(n.html, encoding="utf-8")
        written.append({**n.to_json(), "file": str(path)})
    if args.issue and notices:
        from events.publisher import Publisher
        from processor.app import running_embedded_broker

        bootstrap = settings.kafka_bootstrap_servers or running_embedded_broker(settings)
        if bootstrap is None:
            print("error: --issue publishes notice_issued: set LEDGER_KAFKA_BOOTSTRAP_SERVERS or start"
                  " `benefits-ledger up` first", file=sys.stderr)
            return EXIT_USAGE
        with Publisher(bootstrap, settings.topics, settings.partitions) as pub:
            pub.publish([n.event(occurred_at=datetime.now(UTC), channel=args.channel) for n in notices])
    if args.json:
        sys.stdout.write(dumps({"known_at": known_at.isoformat(), "issued": bool(args.issue), "notices": written})
                         + "\n")
    else:
        for w in written:
            print(f"{w['notice_id']} to {w['recipient']} {w['recipient_id']}: {len(w['discrepancy_ids'])} actions"
                  f" -> {w['file']}")
        verb = "issued (notice_issued published)" if args.issue else "written (not issued: add --issue)"
        print(f"{len(written)} notices {verb}, as known at {known_at.isoformat()}", file=sys.stderr)
    return EXIT_OK


def add_report_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    w = sub.add_parser("worksheet", parents=[common],
                       help="an agency's reconciliation worksheet for a coverage month, as known at R")
    w.add_argument("--payer", required=True, help="the paying agency (e.g. AG-003)")
    w.add_argument("--month", required=True, metavar="YYYY-MM", help="the coverage month")
    w.add_argument("--known-at", dest="known_at", metavar="R",
                   help="recorded time: a date (end of that day, plan time zone), YYYY-MM, or an ISO time; default now")
    w.add_argument("--format", choices=["table", "json", "csv", "xlsx", "html", "pdf"], default=None,
                   help="output format (default table, json with --json); xlsx and pdf need --out")
    w.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    w.set_defaults(fn=cmd_worksheet)

    n = sub.add_parser("notices", parents=[common],
                       help="notices to an agency's coordinator (and its members who must act), or to a member")
    who = n.add_mutually_exclusive_group(required=True)
    who.add_argument("--payer", help="the agency: its coordinator's notice, and its members' own")
    who.add_argument("--account", help="one member account")
    n.add_argument("--known-at", dest="known_at", metavar="R",
                   help="recorded time the notices are made as of (default now); they can be made again from it")
    n.add_argument("--format", choices=["html", "pdf"], default="html")
    n.add_argument("--out", metavar="DIR", required=True, help="directory for the notice documents")
    n.add_argument("--issue", action="store_true",
                   help="publish notice_issued for each notice written (needs the broker)")
    n.add_argument("--channel", choices=["mail", "email", "portal"], default="mail", help="how it is sent")
    n.set_defaults(fn=cmd_notices)
