"""What a reconciliation worksheet is made of (replay/worksheet.py works it out): its remittances,
reconciling items, exceptions and member-months, its totals, and its exports as JSON, CSV and XLSX."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class RemittanceRow:
    remittance_id: str
    event_id: str | None  # None: lines name a remittance the ledger never received
    method: str | None
    trace_number: str | None
    payment_date: date | None
    total_cents: int  # BPR02 (as the latest copy says)
    lines_total_cents: int  # sum of RMR04 (as the latest copy says)
    line_count: int
    received_lines_cents: int  # the lines the ledger holds, every month
    received_line_count: int
    month_lines_cents: int  # the lines the ledger holds for this worksheet's month
    copies: int  # copies of the remittance received (a corrected copy replaces the earlier one)


@dataclass(frozen=True, slots=True)
class Item:
    """One reconciling item: ``cents`` of the variance, and what explains it (a discrepancy, or a rule
    or event named in ``rule``); neither means it is unexplained."""

    kind: str
    cents: int
    description: str
    account_id: str | None = None
    coverage_month: date | None = None
    discrepancy_id: str | None = None
    rule: str | None = None
    event_ids: tuple[str, ...] = ()

    @property
    def explained(self) -> bool:
        return self.discrepancy_id is not None or self.rule is not None


@dataclass(slots=True)
class WorksheetException:
    discrepancy_id: str
    kind: str
    status: str
    account_id: str
    coverage_month: date | None
    expected_cents: int
    actual_cents: int
    cents: int  # the variance this exception explains (sum of its items)
    explanation: str
    action: str
    actor: str
    resolution: str  # how it was resolved or superseded, for a reader ("" while open)
    opened_recorded_at: datetime | None = None
    resolved_recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MemberMonth:
    account_id: str
    plans: str
    billed_cents: int
    adjustments_cents: int
    paid_by_payer_cents: int
    paid_by_others_cents: int
    refunds_cents: int
    balance_cents: int
    due_on: date | None
    open_kinds: tuple[str, ...]


@dataclass(slots=True)
class Worksheet:
    payer_id: str
    month: date
    known_at: datetime
    timezone: str
    events_replayed: int
    billed_cents: int = 0
    adjustments_cents: int = 0
    remitted_cents: int = 0
    lines_cents: int = 0
    received_lines_cents: int = 0
    applied_cents: int = 0
    unapplied_cents: int = 0
    remittances: list[RemittanceRow] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    exceptions: list[WorksheetException] = field(default_factory=list)
    members: list[MemberMonth] = field(default_factory=list)
    tolerance_cents: int = 0

    @property
    def net_billed_cents(self) -> int:
        return self.billed_cents + self.adjustments_cents

    @property
    def variance_cents(self) -> int:
        """Remitted minus billed (with adjustments): positive when the agency sent more."""
        return self.remitted_cents - self.net_billed_cents

    @property
    def unexplained_cents(self) -> int:
        return sum(i.cents for i in self.items if not i.explained)

    @property
    def rule_items(self) -> list[Item]:
        return [i for i in self.items if i.discrepancy_id is None and i.rule is not None]

    @property
    def unexplained_items(self) -> list[Item]:
        return [i for i in self.items if not i.explained]

    @property
    def balanced(self) -> bool:
        return self.unexplained_cents == 0 and not self.unexplained_items

    @property
    def open_exceptions(self) -> list[WorksheetException]:
        return [e for e in self.exceptions if e.status == "open"]

    @property
    def closed_exceptions(self) -> list[WorksheetException]:
        return [e for e in self.exceptions if e.status != "open"]

    def summary(self) -> dict[str, int]:
        return {
            "billed_cents": self.billed_cents, "adjustments_cents": self.adjustments_cents,
            "net_billed_cents": self.net_billed_cents, "remitted_cents": self.remitted_cents,
            "lines_cents": self.lines_cents, "received_lines_cents": self.received_lines_cents,
            "applied_cents": self.applied_cents, "unapplied_cents": self.unapplied_cents,
            "variance_cents": self.variance_cents,
            "explained_by_exceptions_cents": sum(e.cents for e in self.exceptions),
            "explained_by_rules_cents": sum(i.cents for i in self.rule_items),
            "unexplained_cents": self.unexplained_cents,
        }

    # -- exports -----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "payer_id": self.payer_id, "month": f"{self.month:%Y-%m}", "known_at": self.known_at.isoformat(),
            "timezone": self.timezone, "events_replayed": self.events_replayed,
            **self.summary(), "balanced": self.balanced,
            "remittances": [asdict(r) for r in self.remittances],
            "exceptions": [asdict(e) for e in self.exceptions],
            "reconciling_items": [_item_json(i) for i in self.rule_items],
            "unexplained_items": [_item_json(i) for i in self.unexplained_items],
            "items": [_item_json(i) for i in self.items],
            "members": [asdict(m) for m in self.members],
        }

    def to_csv(self) -> str:
        """One flat table; ``record`` says what a row is: summary, remittance, item, exception, member."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="raise", lineterminator="\n")
        w.writeheader()
        base = {"payer_id": self.payer_id, "month": f"{self.month:%Y-%m}", "known_at": self.known_at.isoformat()}
        for name, cents in self.summary().items():
            w.writerow({**base, "record": "summary", "name": name, "cents": cents})
        for r in self.remittances:
            w.writerow({**base, "record": "remittance", "name": r.remittance_id, "cents": r.total_cents,
                        "lines_cents": r.lines_total_cents, "received_cents": r.received_lines_cents,
                        "month_cents": r.month_lines_cents, "method": r.method or "", "trace": r.trace_number or "",
                        "date": r.payment_date.isoformat() if r.payment_date else "", "event_id": r.event_id or ""})
        for i in self.items:
            w.writerow({**base, "record": "item", "name": i.kind, "cents": i.cents, "account_id": i.account_id or "",
                        "coverage_month": i.coverage_month.isoformat() if i.coverage_month else "",
                        "discrepancy_id": i.discrepancy_id or "", "rule": i.rule or "",
                        "explained": "yes" if i.explained else "NO", "detail": i.description})
        for e in self.exceptions:
            w.writerow({**base, "record": "exception", "name": e.kind, "cents": e.cents, "account_id": e.account_id,
                        "coverage_month": e.coverage_month.isoformat() if e.coverage_month else "",
                        "discrepancy_id": e.discrepancy_id, "status": e.status, "expected_cents": e.expected_cents,
                        "actual_cents": e.actual_cents, "detail": e.explanation + (f" [{e.resolution}]"
                                                                                   if e.resolution else "")})
        for m in self.members:
            w.writerow({**base, "record": "member", "name": m.plans, "account_id": m.account_id,
                        "cents": m.balance_cents, "billed_cents": m.billed_cents,
                        "adjustments_cents": m.adjustments_cents, "paid_cents": m.paid_by_payer_cents,
                        "other_payers_cents": m.paid_by_others_cents, "refunds_cents": m.refunds_cents,
                        "status": " ".join(m.open_kinds)})
        return buf.getvalue()

    def to_xlsx(self) -> bytes:
        """A workbook: Summary, Remittances, Reconciliation, Exceptions, Members. Money in dollars (exact
        decimals, two places); the Summary's check row recomputes the remainder with a formula."""
        from openpyxl import Workbook
        from openpyxl.styles import Font, PatternFill

        money = '#,##0.00;[Red]-#,##0.00'
        bold = Font(bold=True)
        wb = Workbook()
        ws = wb.active
        assert ws is not None
        ws.title = "Summary"
        ws.append([f"Reconciliation worksheet: {self.payer_id}, coverage month {self.month:%Y-%m}"])
        ws["A1"].font = Font(bold=True, size=13)
        ws.append([f"as known at {self.known_at.isoformat()} ({self.timezone});"
                   f" {self.events_replayed:,} events replayed"])
        ws.append([])
        rows = [("Billed", self.billed_cents), ("Adjustments", self.adjustments_cents),
                ("Net billed", self.net_billed_cents), ("Remitted (payment totals)", self.remitted_cents),
                ("Remittance lines (as the remittances say)", self.lines_cents),
                ("Lines received by the ledger", self.received_lines_cents), ("Applied", self.applied_cents),
                ("Unapplied", self.unapplied_cents), ("Variance (remitted - net billed)", self.variance_cents),
                ("Explained by exceptions", sum(e.cents for e in self.exceptions)),
                ("Explained by plan rules and events", sum(i.cents for i in self.rule_items)),
                ("Unexplained remainder", self.unexplained_cents)]
        first = ws.max_row + 1
        for label, cents in rows:
            ws.append([label, _dollars(cents)])
            ws.cell(ws.max_row, 2).number_format = money
        variance_row, last = first + 8, first + len(rows) - 1
        ws.append(["Check: variance - explained (must equal the remainder)",
                   f"=B{variance_row}-B{variance_row + 1}-B{variance_row + 2}"])
        ws.cell(ws.max_row, 2).number_format = money
        for r in (variance_row, last):
            ws.cell(r, 1).font = bold
            ws.cell(r, 2).font = bold
        if not self.balanced:
            ws.cell(last, 2).fill = PatternFill("solid", fgColor="FFC7CE")
            ws.append(["UNEXPLAINED: the remainder must be 0"])
        ws.column_dimensions["A"].width = 52
        ws.column_dimensions["B"].width = 16

        def sheet(title: str, header: list[str], body: list[list[Any]], money_cols: set[int]) -> None:
            s = wb.create_sheet(title)
            s.append(header)
            for c in s[1]:
                c.font = bold
            for row in body:
                s.append(row)
                for col in money_cols:
                    s.cell(s.max_row, col).number_format = money
            s.freeze_panes = "A2"
            for i, _ in enumerate(header, start=1):
                s.column_dimensions[chr(64 + i) if i <= 26 else "Z"].width = 18

        sheet("Remittances", ["remittance", "method", "trace", "date", "payment total", "lines total", "lines",
                              "lines received", "for this month", "copies"],
              [[r.remittance_id, r.method, r.trace_number, r.payment_date, _dollars(r.total_cents),
                _dollars(r.lines_total_cents), r.line_count, _dollars(r.received_lines_cents),
                _dollars(r.month_lines_cents), r.copies] for r in self.remittances], {5, 6, 8, 9})
        sheet("Reconciliation", ["item", "amount", "account", "month", "explained by", "description"],
              [[i.kind, _dollars(i.cents), i.account_id, i.coverage_month,
                i.discrepancy_id or i.rule or "UNEXPLAINED", i.description] for i in self.items], {2})
        sheet("Exceptions", ["discrepancy", "kind", "status", "account", "month", "expected", "actual",
                             "explains", "who acts", "action", "explanation", "resolution"],
              [[e.discrepancy_id, e.kind, e.status, e.account_id, e.coverage_month, _dollars(e.expected_cents),
                _dollars(e.actual_cents), _dollars(e.cents), e.actor, e.action, e.explanation, e.resolution]
               for e in self.exceptions], {6, 7, 8})
        sheet("Members", ["account", "plans", "billed", "adjustments", "paid by agency", "paid by others",
                          "refunds", "balance", "due", "open"],
              [[m.account_id, m.plans, _dollars(m.billed_cents), _dollars(m.adjustments_cents),
                _dollars(m.paid_by_payer_cents), _dollars(m.paid_by_others_cents), _dollars(m.refunds_cents),
                _dollars(m.balance_cents), m.due_on, " ".join(m.open_kinds)] for m in self.members],
              {3, 4, 5, 6, 7, 8})
        out = io.BytesIO()
        wb.save(out)
        return out.getvalue()


CSV_COLUMNS = (
    "record", "payer_id", "month", "known_at", "name", "cents", "account_id", "coverage_month", "discrepancy_id",
    "rule", "explained", "status", "expected_cents", "actual_cents", "lines_cents", "received_cents",
    "month_cents", "method", "trace", "date", "event_id", "billed_cents", "adjustments_cents", "paid_cents",
    "other_payers_cents", "refunds_cents", "detail",
)  # fmt: skip


def _dollars(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def _item_json(i: Item) -> dict[str, Any]:
    return {**asdict(i), "explained": i.explained}
