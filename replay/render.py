"""Statement reports as JSON, CSV and tables. Money is integer cents in JSON and CSV. The HTML and PDF
documents are templates: see replay/documents.py."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import UTC
from typing import Any

from events.money import format_cents
from replay.statements import Report, Statement


def _statement_json(st: Statement) -> dict[str, Any]:
    return {"kind": st.kind, "id": st.id, "totals": st.totals(), "lines": [asdict(x) for x in st.lines]}


def report_json(report: Report) -> dict[str, Any]:
    return {
        "known_at": report.known_at.isoformat(),
        "known_at_utc": report.known_at.astimezone(UTC).isoformat(),
        "known_at_input": report.known_at_input,
        "through": report.through.isoformat() if report.through else None,
        "through_input": report.through_input,
        "timezone": report.timezone,
        "events_replayed": report.events_replayed,
        "last_recorded_at": report.last_recorded_at.isoformat() if report.last_recorded_at else None,
        "members": [_statement_json(s) for s in report.members],
        "payers": [_statement_json(s) for s in report.payers],
        "open_discrepancies": [asdict(d) for d in report.open_discrepancies],
        "aging": {
            "buckets": report.aging_buckets,
            "totals_cents": report.aging_totals(),
            "items": [asdict(a) for a in report.aging],
            **({k: v for k, v in report.aging_detail.to_json().items() if k in (
                "outstanding_cents", "credits_cents", "balance_cents", "by_payer", "credits")}
               if report.aging_detail is not None else {}),
        },
    }


CSV_COLUMNS = (
    "record", "known_at", "through", "id", "coverage_month", "due_on", "billed_cents", "adjustments_cents",
    "paid_cents", "refunds_cents", "balance_cents", "unapplied_cents", "bucket", "days_past_due", "kind",
    "status", "expected_cents", "actual_cents", "detail",
)  # fmt: skip


def report_csv(report: Report) -> str:
    """One flat table; ``record`` says what a row is: member_line, member_total, payer_line, payer_total,
    aging, aging_total, discrepancy. Every row echoes known_at and through."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="raise", lineterminator="\n")
    w.writeheader()
    base = {"known_at": report.known_at.isoformat(), "through": report.through.isoformat() if report.through else ""}
    for st in (*report.members, *report.payers):
        for x in st.lines:
            w.writerow({**base, "record": f"{st.kind}_line", "id": st.id,
                        "coverage_month": x.coverage_month.isoformat(),
                        "due_on": x.due_on.isoformat() if x.due_on else "", "billed_cents": x.billed_cents,
                        "adjustments_cents": x.adjustments_cents, "paid_cents": x.paid_cents,
                        "refunds_cents": x.refunds_cents, "balance_cents": x.balance_cents,
                        "unapplied_cents": x.unapplied_cents})
        w.writerow({**base, "record": f"{st.kind}_total", "id": st.id, **st.totals()})
    for a in report.aging:
        w.writerow({**base, "record": "aging", "id": a.account_id, "coverage_month": a.coverage_month.isoformat(),
                    "due_on": a.due_on.isoformat(), "balance_cents": a.outstanding_cents, "bucket": a.bucket,
                    "days_past_due": a.days_past_due, "detail": f"payer {a.payer_id}"})
    for bucket, cents in report.aging_totals().items():
        w.writerow({**base, "record": "aging_total", "bucket": bucket, "balance_cents": cents})
    for d in report.open_discrepancies:
        w.writerow({**base, "record": "discrepancy", "id": d.account_id,
                    "coverage_month": d.coverage_month.isoformat() if d.coverage_month else "", "kind": d.kind,
                    "status": d.status, "expected_cents": d.expected_cents, "actual_cents": d.actual_cents,
                    "detail": d.explanation})
    return buf.getvalue()


def report_table(report: Report) -> str:
    """Human output (rich tables rendered to text)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=io.StringIO(), width=140, record=True)
    through = report.through.isoformat() if report.through else "all months"
    console.print(f"books as known at {report.known_at.isoformat()} ({report.timezone}; input"
                  f" {report.known_at_input or 'now'}), coverage months through {through};"
                  f" {report.events_replayed:,} events replayed")
    for st in (*report.members, *report.payers):
        t = Table(title=f"{st.kind} {st.id}")
        for col in ("month", "due", "billed", "adjustments", "paid", "refunds", "balance"):
            t.add_column(col, justify="right")
        for x in st.lines:
            t.add_row(f"{x.coverage_month:%Y-%m}", str(x.due_on or ""), format_cents(x.billed_cents),
                      format_cents(x.adjustments_cents), format_cents(x.paid_cents), format_cents(x.refunds_cents),
                      format_cents(x.balance_cents))
        t.add_row("total", "", *(format_cents(c) for c in (
            st.billed_cents, st.adjustments_cents, st.paid_cents, st.refunds_cents, st.balance_cents)), style="bold")
        console.print(t)
        if st.unapplied_cents:
            console.print(f"unapplied cash: {format_cents(st.unapplied_cents)}")
    aging = Table(title=f"aging of outstanding amounts at {report.known_at.date()}")
    aging.add_column("bucket")
    aging.add_column("outstanding", justify="right")
    for bucket, cents in report.aging_totals().items():
        aging.add_row(bucket, format_cents(cents))
    console.print(aging)
    if report.open_discrepancies:
        dt = Table(title="open discrepancies as they stood")
        for col in ("account", "month", "kind", "expected", "actual", "who", "explanation"):
            dt.add_column(col)
        for d in report.open_discrepancies:
            dt.add_row(d.account_id, f"{d.coverage_month:%Y-%m}" if d.coverage_month else "-", d.kind,
                       format_cents(d.expected_cents), format_cents(d.actual_cents), d.actor, d.explanation)
        console.print(dt)
    else:
        console.print("no open discrepancies")
    return console.export_text()
