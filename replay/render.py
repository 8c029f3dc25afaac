"""Statement reports as JSON, CSV and tables. Money is integer cents in JSON and CSV."""

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


# -- HTML ------------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1b1f23}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta{color:#57606a;margin-bottom:16px}
table{border-collapse:collapse;margin:4px 0 12px}
th,td{border:1px solid #d0d7de;padding:3px 8px}th{background:#f6f8fa}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:600;background:#f6f8fa}
.charts{display:flex;flex-wrap:wrap;gap:32px}
"""


def _esc(value: object) -> str:
    import html

    return html.escape(str(value), quote=True)


def _bar_chart(title: str, series: list[tuple[str, list[tuple[str, int]]]], money: bool, chart_id: str) -> str:
    """A grouped bar chart as inline SVG: ``series`` is [(category, [(legend, value), ...]), ...]."""
    colours = ("#0969da", "#1a7f37", "#bf3989", "#9a6700")
    width, height, left, bottom, top = 560, 260, 90, 60, 30
    peak = max((v for _, values in series for _, v in values), default=0) or 1
    groups = max(1, len(series))
    group_w = (width - left - 10) / groups
    per = max(1, max((len(values) for _, values in series), default=1))
    bar_w = max(4.0, group_w * 0.8 / per)
    parts = [f'<svg id="{chart_id}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
             f' role="img" aria-label="{_esc(title)}">',
             f'<text x="{left}" y="18" font-size="13" font-weight="600">{_esc(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#57606a"/>']
    plot_h = height - bottom - top
    for gi, (category, values) in enumerate(series):
        x0 = left + gi * group_w + group_w * 0.1
        for vi, (legend, value) in enumerate(values):
            h = plot_h * value / peak
            x = x0 + vi * bar_w
            label = format_cents(value) if money else str(value)
            parts.append(f'<rect class="bar" data-category="{_esc(category)}" data-series="{_esc(legend)}"'
                         f' data-value="{value}" x="{x:.1f}" y="{height - bottom - h:.1f}" width="{bar_w - 2:.1f}"'
                         f' height="{h:.1f}" fill="{colours[vi % len(colours)]}"><title>{_esc(category)}'
                         f' {_esc(legend)}: {_esc(label)}</title></rect>')
        parts.append(f'<text x="{x0 + group_w * 0.4:.1f}" y="{height - bottom + 14}" font-size="10"'
                     f' text-anchor="middle">{_esc(category)}</text>')
    legends = [legend for legend, _ in series[0][1]] if series else []
    for li, legend in enumerate(legends):
        parts.append(f'<rect x="{left + li * 140}" y="{height - 22}" width="10" height="10"'
                     f' fill="{colours[li % len(colours)]}"/><text x="{left + li * 140 + 14}" y="{height - 13}"'
                     f' font-size="11">{_esc(legend)}</text>')
    parts.append(f'<text x="{left - 6}" y="{top + 4}" font-size="10" text-anchor="end">'
                 f'{_esc(format_cents(peak) if money else peak)}</text></svg>')
    return "".join(parts)


def _statement_html(st: Statement) -> str:
    rows = "".join(
        f"<tr><td>{x.coverage_month:%Y-%m}</td><td>{_esc(x.due_on or '')}</td>"
        + "".join(f'<td class="num">{format_cents(v)}</td>' for v in (
            x.billed_cents, x.adjustments_cents, x.paid_cents, x.refunds_cents, x.balance_cents))
        + "</tr>"
        for x in st.lines
    )
    total = ('<tr class="total"><td>total</td><td></td>' + "".join(
        f'<td class="num" data-total="{name}">{format_cents(v)}</td>' for name, v in (
            ("billed", st.billed_cents), ("adjustments", st.adjustments_cents), ("paid", st.paid_cents),
            ("refunds", st.refunds_cents), ("balance", st.balance_cents))) + "</tr>")
    cash = f"<p>unapplied cash: {format_cents(st.unapplied_cents)}</p>" if st.unapplied_cents else ""
    head = "".join(f'<th class="num">{h}</th>' for h in ("billed", "adjustments", "paid", "refunds", "balance"))
    return (f'<h2>{_esc(st.kind)} {_esc(st.id)}</h2><table class="statement" data-id="{_esc(st.id)}">'
            f"<tr><th>month</th><th>due</th>{head}</tr>{rows}{total}</table>{cash}")


def report_html(report: Report) -> str:
    """One self-contained HTML file: statement tables, aging and discrepancy charts as inline SVG."""
    through = report.through.isoformat() if report.through else "all months"
    aging = [(bucket, [("outstanding", cents)]) for bucket, cents in report.aging_totals().items()]
    per_month: dict[str, list[int]] = {}
    for d in report.discrepancies:
        key = f"{d.coverage_month:%Y-%m}" if d.coverage_month else "none"
        cell = per_month.setdefault(key, [0, 0])
        cell[0] += 1
        cell[1] += d.status == "resolved"
    discrepancy_series = [(m, [("opened", o), ("resolved", r)]) for m, (o, r) in sorted(per_month.items())]
    open_rows = "".join(
        f"<tr><td>{_esc(d.account_id)}</td><td>{d.coverage_month:%Y-%m}</td><td>{_esc(d.kind)}</td>"
        f'<td class="num">{format_cents(d.expected_cents)}</td><td class="num">{format_cents(d.actual_cents)}</td>'
        f"<td>{_esc(d.actor)}</td><td>{_esc(d.explanation)}</td></tr>"
        if d.coverage_month else
        f"<tr><td>{_esc(d.account_id)}</td><td>-</td><td>{_esc(d.kind)}</td>"
        f'<td class="num">{format_cents(d.expected_cents)}</td><td class="num">{format_cents(d.actual_cents)}</td>'
        f"<td>{_esc(d.actor)}</td><td>{_esc(d.explanation)}</td></tr>"
        for d in report.open_discrepancies
    )
    aging_rows = "".join(f'<tr><td>{_esc(b)}</td><td class="num" data-bucket="{_esc(b)}">{format_cents(c)}</td></tr>'
                         for b, c in report.aging_totals().items())
    body = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>benefits-ledger statement as known at {_esc(report.known_at.isoformat())}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>benefits-ledger: books as known at a recorded time</h1>",
        f'<div class="meta">known at <b id="known-at">{_esc(report.known_at.isoformat())}</b>'
        f" ({_esc(report.timezone)}; input {_esc(report.known_at_input or 'now')}), coverage months through"
        f' <b id="through">{_esc(through)}</b>; {report.events_replayed:,} events replayed</div>',
        '<div class="charts">',
        _bar_chart("aging of outstanding amounts", aging, True, "aging-chart"),
        _bar_chart("discrepancies opened and resolved, by coverage month", discrepancy_series, False,
                   "discrepancy-chart"),
        "</div>",
        f'<h2>aging</h2><table id="aging">{aging_rows}</table>',
        *(_statement_html(st) for st in (*report.members, *report.payers)),
        "<h2>open discrepancies as they stood</h2>",
        '<table id="open-discrepancies"><tr><th>account</th><th>month</th><th>kind</th><th>expected</th>'
        f"<th>actual</th><th>who</th><th>explanation</th></tr>{open_rows}</table>",
        "</body></html>",
    ]
    return "\n".join(body)
