"""The agency reconciliation worksheet: one paying agency, one coverage month, as known at R.

What the agency was billed for the month is set against what it remitted, and the difference (the
variance) is taken apart into reconciling items, each computed from the replayed books:

    remitted - (billed + adjustments) = sum of the items

- per remittance: its payment total against the sum of its lines (BPR02 - sum RMR04), the lines it
  lists that the ledger does not hold, and its lines for other coverage months;
- per payment line of the month that is not applied to a bill: held, duplicate or after termination
  (unapplied cash), returned to the agency, reversed, or moved by a cash application;
- per member-month billed to the agency: what was applied against what was billed, less refunds paid
  back, less what other payers paid; the rest is the month's payment gap.

Each item is explained by a discrepancy (open, or resolved by the event that settled it), by an event
(a refund, a reversal, a cash application) or by a plan rule (the tolerance, the grace period, the
payroll allocation, another month's worksheet). Where a discrepancy's own amounts do not account for
the gap the books show, the difference is a residual item. Items nothing explains add up to the
**unexplained remainder**, which must be 0; a worksheet with any other remainder is flagged.
The exceptions' cents (the items each explains), the rule items and the remainder add up to the variance.

The worksheet's rows, totals and exports are in replay/worksheet_model.py (re-exported here); this
module works them out from the replayed books.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from events.money import format_cents
from processor.rules import payments as payment_rules
from processor.rules.base import MonthView
from processor.rules.coverage import priced_segments
from processor.rules.remittances import remittance_account
from processor.state import (
    PAYMENT_AFTER_TERM,
    PAYMENT_APPLIED,
    PAYMENT_DUPLICATE,
    PAYMENT_HELD,
    PAYMENT_MOVED,
    PAYMENT_REFUNDED,
    PAYMENT_REVERSED,
    AccountState,
    MonthState,
    PaymentLine,
)
from projections.model import DiscrepancyRow
from replay.books import Books
from replay.statements import bill_payer
from replay.worksheet_model import CSV_COLUMNS as CSV_COLUMNS
from replay.worksheet_model import Item as Item
from replay.worksheet_model import MemberMonth as MemberMonth
from replay.worksheet_model import RemittanceRow as RemittanceRow
from replay.worksheet_model import Worksheet as Worksheet
from replay.worksheet_model import WorksheetException as WorksheetException

# Kinds whose amounts are a difference between cash and bills; the others (wrong_rate, billed_not_enrolled,
# enrolled_not_billed, tax_treatment, retroactive_change) say what is owed, not what was paid.
GAP_KINDS = frozenset({"underpaid", "overpaid", "refund_due", "missing_payment", "cobra_shortfall"})
HELD_KIND = {PAYMENT_HELD: "unmatched_payment", PAYMENT_DUPLICATE: "duplicate_payment",
             PAYMENT_AFTER_TERM: "paid_after_termination"}
CASH_KINDS = GAP_KINDS | set(HELD_KIND.values()) | {"remittance_total_mismatch"}


class WorksheetError(ValueError):
    """Bad input to a worksheet (an unreadable month); the message says which."""


def parse_month(text: str) -> date:
    """``YYYY-MM`` (or a date in the month) to the month's first day."""
    m = re.fullmatch(r"\s*(\d{4})-(\d{1,2})(?:-(\d{1,2}))?\s*", text or "")
    if not m or not 1 <= int(m[2]) <= 12:
        raise WorksheetError(f"cannot read {text!r} as a month (try 2026-03)")
    return date(int(m[1]), int(m[2]), 1)


# -- building it -----------------------------------------------------------------------------------------


def _gap_claim(d: DiscrepancyRow) -> int:
    """What a cash discrepancy says the books are off by: actual - expected (paid short is negative)."""
    return d.actual_cents - d.expected_cents


def _resolution(books: Books, d: DiscrepancyRow) -> str:
    if d.status == "open":
        return ""
    verb = {"resolved": "resolved by", "superseded": "superseded by"}.get(d.status, f"{d.status} by")
    return f"{verb} {books.describe_event(d.resolved_by)}".strip()


class _Builder:
    def __init__(self, books: Books, payer_id: str, month: date) -> None:
        self.books, self.payer, self.month = books, payer_id, month
        self.key = month.isoformat()
        self.plan = books.plan
        self.items: list[Item] = []
        self.used: set[str] = set()  # discrepancy ids an item was explained by
        rows = books.result.discrepancies.values()
        self.by_month: dict[str, list[DiscrepancyRow]] = {}
        for d in rows:
            if d.coverage_month == month:
                self.by_month.setdefault(d.account_id, []).append(d)
        self.by_cause: dict[str, list[DiscrepancyRow]] = {}
        for d in rows:
            if d.coverage_month == month or d.account_id == remittance_account(payer_id):
                for eid in d.cause_event_ids:
                    self.by_cause.setdefault(eid, []).append(d)

    def add(self, item: Item) -> None:
        if item.cents or item.kind in ("cash_applied",) or not item.explained:
            self.items.append(item)
        if item.discrepancy_id:
            self.used.add(item.discrepancy_id)

    def explain(self, kind: str, state_cents: int, d: DiscrepancyRow | None, description: str, *,
                account_id: str | None = None, residual_rule: tuple[str, int] | None = None) -> None:
        """An item the books show (``state_cents``) explained by discrepancy ``d`` (its own amounts), with a
        residual item for any difference; ``residual_rule`` names a rule that accounts for (part of) it."""
        claim = _gap_claim(d) if d is not None else 0
        if d is not None:
            self.add(Item(kind, claim, description, account_id, self.month, d.discrepancy_id,
                          event_ids=d.cause_event_ids))
        rest = state_cents - claim
        if rest and residual_rule is not None and residual_rule[1]:
            rule, cents = residual_rule
            self.add(Item("payroll_allocation", cents, rule, account_id, self.month, rule="payroll_allocation"))
            rest -= cents
        if rest:
            what = (f"the books show {format_cents(state_cents)} but {d.kind} {d.discrepancy_id} accounts for"
                    f" {format_cents(claim)}") if d is not None else (
                f"{format_cents(state_cents)} that no finding explains")
            self.add(Item("residual", rest, f"{description}: {what}", account_id, self.month))

    def find(self, account_id: str, kinds: frozenset[str] | set[str], *, open_only: bool = True,
             cause: str | None = None) -> DiscrepancyRow | None:
        found = [d for d in (self.by_cause.get(cause, []) if cause else self.by_month.get(account_id, []))
                 if d.kind in kinds and d.account_id == account_id and (d.status == "open" or not open_only)]
        found.sort(key=lambda d: (d.status != "open",
                                  -(d.opened_recorded_at.timestamp() if d.opened_recorded_at else 0.0)))
        return found[0] if found else None


def worksheet(books: Books, payer_id: str, month: date) -> Worksheet:
    """The reconciliation worksheet of ``payer_id`` for coverage month ``month`` (its first day)."""
    if month.day != 1:
        raise WorksheetError(f"a coverage month is named by its first day, not {month}")
    b = _Builder(books, payer_id, month)
    ws = Worksheet(payer_id=payer_id, month=month, known_at=books.known_at, timezone=books.plan.timezone,
                   events_replayed=books.result.events_replayed, tolerance_cents=books.plan.tolerance_cents)
    derived = books.derived_event_ids()
    key = month.isoformat()

    # -- the month's payment lines of this payer, and the remittances they came in ----------------------
    month_lines = books.lines_of(payer_id, key)
    received = [(a, p) for a, p in month_lines if p.event_id not in derived]
    groups: dict[str, list[tuple[AccountState, PaymentLine]]] = {}
    for a, p in received:
        groups.setdefault(p.remittance_id or "", []).append((a, p))
    for rid, copies in books.remittances.items():
        if (copies[-1].payer_id == payer_id and rid not in groups and copies[-1].payment_date.replace(day=1) == month
                and not any(p.event_id not in derived for _, _, p in books.lines_of_remittance(rid))):
            groups[rid] = []  # its lines never arrived: it still belongs on the month it was paid in
    for rid in sorted(groups):
        here = sum(p.amount_cents for _, p in groups[rid])
        latest = books.latest_remittance(rid) if rid else None
        if latest is None:  # no remittance record: the lines stand for themselves
            ws.remittances.append(RemittanceRow(
                remittance_id=rid or "(no remittance)", event_id=None, method=None, trace_number=None,
                payment_date=None, total_cents=here, lines_total_cents=here, line_count=len(groups[rid]),
                received_lines_cents=here, received_line_count=len(groups[rid]), month_lines_cents=here, copies=0,
            ))
            continue
        lines_all = [(a, k, p) for a, k, p in books.lines_of_remittance(rid) if p.event_id not in derived]
        held_all = sum(p.amount_cents for _, _, p in lines_all)
        ws.remittances.append(RemittanceRow(
            remittance_id=rid, event_id=latest.event_id, method=latest.method, trace_number=latest.trace_number,
            payment_date=latest.payment_date, total_cents=latest.total_cents,
            lines_total_cents=latest.lines_total_cents, line_count=latest.line_count,
            received_lines_cents=held_all, received_line_count=len(lines_all), month_lines_cents=here,
            copies=len(books.remittances[rid]),
        ))
        # The ledger judges a remittance against the lines it posted (processor/rules/remittances.py): what
        # the payment brings beyond them, a line that never arrived included, is its remittance_total_mismatch
        # (and the excess is unapplied cash on the payer). Before it is judged the gap is not explained.
        gap = latest.total_cents - held_all - latest.adjustments_cents
        mismatch = b.find(remittance_account(latest.payer_id), {"remittance_total_mismatch"}, cause=latest.event_id)
        said = (f"; the file says {latest.line_count} lines of {format_cents(latest.lines_total_cents)}"
                if latest.lines_total_cents != held_all else "")
        if mismatch is not None:
            b.explain("remittance_total", gap, mismatch,
                      f"remittance {rid} (trace {latest.trace_number}) pays {format_cents(latest.total_cents)};"
                      f" the ledger holds {len(lines_all)} of its lines, {format_cents(held_all)}{said}",
                      account_id=remittance_account(latest.payer_id))
        elif gap:
            b.add(Item("lines_not_received" if said else "remittance_total", gap,
                       f"remittance {rid} pays {format_cents(latest.total_cents)}; the ledger holds"
                       f" {len(lines_all)} of its lines, {format_cents(held_all)}{said}, and has not judged it yet",
                       account_id=remittance_account(latest.payer_id), event_ids=(latest.event_id,)))
        other = held_all - here
        if other:
            months = sorted({k if k != "-" else "no coverage month" for _, k, p in lines_all if k != key})
            b.add(Item("other_months", other, f"lines of remittance {rid} for {', '.join(months)}: on those"
                       " months' worksheets", rule="other_months"))
    ws.remitted_cents = sum(r.total_cents for r in ws.remittances)
    ws.lines_cents = sum(r.lines_total_cents for r in ws.remittances)
    ws.received_lines_cents = sum(p.amount_cents for _, p in received)

    # -- lines that are not applied to a bill of this month -------------------------------------------------
    after_term: dict[str, list[tuple[AccountState, PaymentLine]]] = {}
    for a, p in received:
        if p.status == PAYMENT_APPLIED:
            continue
        if p.status in (PAYMENT_HELD, PAYMENT_DUPLICATE):
            kind = HELD_KIND[p.status]
            d = b.find(a.account_id, {kind}, cause=p.event_id)
            b.explain(kind, p.amount_cents, d, f"payment {p.payment_id} of {format_cents(p.amount_cents)}"
                      f" on {a.account_id} is held ({p.status})", account_id=a.account_id)
        elif p.status == PAYMENT_AFTER_TERM:
            after_term.setdefault(a.account_id, []).append((a, p))
        elif p.status == PAYMENT_REFUNDED:
            info = books.refunds.get(p.refund_id or "")
            settled = b.find(a.account_id, set(HELD_KIND.values()), open_only=False, cause=p.event_id)
            b.add(Item("refunded_cash", p.amount_cents,
                       f"held payment {p.payment_id} of {format_cents(p.amount_cents)} returned to"
                       f" {info.payee_id if info else p.payer_id} by refund {p.refund_id}", a.account_id, month,
                       settled.discrepancy_id if settled else None, rule="refund_issued",
                       event_ids=(info.event_id,) if info else ()))
        elif p.status == PAYMENT_REVERSED:
            b.add(Item("reversed", p.amount_cents, f"payment {p.payment_id} of {format_cents(p.amount_cents)}"
                       f" was reversed ({books.describe_event(p.reversal_event_id)})", a.account_id, month,
                       rule="payment_reversed", event_ids=(p.reversal_event_id or "",)))
        elif p.status == PAYMENT_MOVED:
            settled = b.find(a.account_id, {"unmatched_payment", "duplicate_payment", "paid_after_termination"},
                             open_only=False, cause=p.event_id)
            b.add(Item("cash_applied", p.amount_cents, f"payment {p.payment_id} of {format_cents(p.amount_cents)}"
                       f" on {a.account_id} was applied to {p.moved_to}", a.account_id, month,
                       settled.discrepancy_id if settled else None, rule="cash_applied",
                       event_ids=(p.reversal_event_id or "",)))
        else:  # pragma: no cover - every status is handled above
            raise AssertionError(f"payment status {p.status}")
    for account_id, lines in after_term.items():
        amount = sum(p.amount_cents for _, p in lines)
        d = b.find(account_id, {"paid_after_termination"})
        b.explain("paid_after_termination", amount, d, f"{format_cents(amount)} paid for {month:%Y-%m} on"
                  f" {account_id} after its coverage ended", account_id=account_id)
    ws.unapplied_cents = sum(p.amount_cents for _, p in received if p.status in HELD_KIND)

    # -- applied lines, and the member-months billed to this payer ------------------------------------------
    applied = [(a, p) for a, p in month_lines if p.status == PAYMENT_APPLIED]
    ws.applied_cents = sum(p.amount_cents for _, p in applied)
    billed_here: dict[str, tuple[AccountState, MonthState]] = {}
    for account in books.accounts.values():
        m = account.months.get(key)
        if m is not None and m.bills and bill_payer(account, m) == payer_id:
            billed_here[account.account_id] = (account, m)
    for a, p in applied:
        if p.event_id in derived:
            b.add(Item("cash_applied", -p.amount_cents, f"payment {p.payment_id} of {format_cents(p.amount_cents)}"
                       f" posted on {a.account_id} by a cash application", a.account_id, month,
                       rule="cash_applied", event_ids=(p.event_id,)))
        if a.account_id not in billed_here:
            m = a.months[key]
            b.add(Item("other_payer", p.amount_cents, f"payment {p.payment_id} of {format_cents(p.amount_cents)}"
                       f" applied to {a.account_id}, whose {month:%Y-%m} bill is addressed to {bill_payer(a, m)}",
                       a.account_id, month, rule="other_payer"))
    for account_id in sorted(billed_here):
        account, m = billed_here[account_id]
        _member_month(b, ws, account, m)
    _pair_cash_applications(b)

    # -- the exceptions of this payer and month --------------------------------------------------------------
    rids = {c.event_id for r in ws.remittances for c in books.remittances.get(r.remittance_id, [])}
    rows = [d for d in books.result.discrepancies.values()
            if (d.coverage_month == month and (d.payer_id == payer_id or d.account_id in billed_here))
            or d.discrepancy_id in b.used
            or (d.kind == "remittance_total_mismatch" and d.account_id == remittance_account(payer_id)
                and rids.intersection(d.cause_event_ids))]
    explained: dict[str, int] = {}
    for i in b.items:
        if i.discrepancy_id:
            explained[i.discrepancy_id] = explained.get(i.discrepancy_id, 0) + i.cents
    for d in sorted(rows, key=lambda d: (d.status != "open", d.kind, d.account_id, d.discrepancy_id)):
        ws.exceptions.append(WorksheetException(
            discrepancy_id=d.discrepancy_id, kind=d.kind, status=d.status, account_id=d.account_id,
            coverage_month=d.coverage_month, expected_cents=d.expected_cents, actual_cents=d.actual_cents,
            cents=explained.get(d.discrepancy_id, 0), explanation=d.explanation, action=d.action, actor=d.actor,
            resolution=_resolution(books, d), opened_recorded_at=d.opened_recorded_at,
            resolved_recorded_at=d.resolved_recorded_at,
        ))
    ws.items = b.items
    assert sum(i.cents for i in ws.items) == ws.variance_cents, (
        f"worksheet {payer_id} {month:%Y-%m}: items add up to {sum(i.cents for i in ws.items)},"
        f" the variance is {ws.variance_cents}")
    return ws


def _member_month(b: _Builder, ws: Worksheet, account: AccountState, m: MonthState) -> None:
    """One member-month billed to the payer: its bills and what was applied, item by item."""
    payer, month, plan = b.payer, b.month, b.plan
    net = m.billed_cents + m.adjusted_cents
    applied = [p for p in m.payments if p.status == PAYMENT_APPLIED]
    paid_all = sum(p.amount_cents for p in applied)
    by_payer = sum(p.amount_cents for p in applied if p.payer_id == payer)
    refunds = m.refunded_cents
    ws.billed_cents += m.billed_cents
    ws.adjustments_cents += m.adjusted_cents
    open_kinds = tuple(sorted(d.kind for d in b.by_month.get(account.account_id, []) if d.status == "open"))
    ws.members.append(MemberMonth(
        account_id=account.account_id, plans=", ".join(sorted({f"{x.plan}/{x.tier}" for x in m.bills})),
        billed_cents=m.billed_cents, adjustments_cents=m.adjusted_cents, paid_by_payer_cents=by_payer,
        paid_by_others_cents=paid_all - by_payer, refunds_cents=refunds, balance_cents=m.balance_cents,
        due_on=m.due_on, open_kinds=open_kinds,
    ))
    aid = account.account_id
    if paid_all != by_payer:
        others = sorted({p.payer_id for p in applied if p.payer_id != payer})
        b.add(Item("other_payer", -(paid_all - by_payer), f"{format_cents(paid_all - by_payer)} of {aid}'s"
                   f" {month:%Y-%m} was paid by {', '.join(others)}", aid, month, rule="other_payer"))
    for r in m.refunds:
        if r.returned_by is not None:
            continue
        info = b.books.refunds.get(r.refund_id)
        settled = next((d for d in b.by_month.get(aid, []) if d.status != "open" and d.resolved_by == r.event_id
                        and d.kind in GAP_KINDS), None)
        b.add(Item("refund", r.amount_cents, f"{format_cents(r.amount_cents)} of {aid}'s {month:%Y-%m} credit"
                   f" refunded to {r.payee_id} (refund {r.refund_id}"
                   + (f", {info.method}, {info.issued_on}" if info else "") + ")",
                   aid, month, settled.discrepancy_id if settled else None, rule="refund_issued",
                   event_ids=(r.event_id,)))
    gap = paid_all - refunds - net  # what the month's own payments are off by, after refunds paid back
    owed = payment_rules.owed_by_deductions(applied, net, plan, month) if applied else net
    d = b.find(aid, GAP_KINDS)
    allocation = owed - net
    if d is not None:
        b.explain(d.kind, gap, d, f"{aid} {month:%Y-%m}: billed {format_cents(net)}, paid"
                  f" {format_cents(paid_all)}" + (f", refunded {format_cents(refunds)}" if refunds else ""),
                  account_id=aid, residual_rule=(f"{len(applied)} {applied[0].pay_frequency} deductions owe"
                                                 f" {format_cents(owed)} of the {format_cents(net)} month"
                                                 if applied and allocation else "", allocation))
        return
    if gap == 0:
        return
    if allocation:
        b.add(Item("payroll_allocation", allocation, f"{aid} {month:%Y-%m}: {len(applied)}"
                   f" {applied[0].pay_frequency} deductions owe {format_cents(owed)} of the {format_cents(net)}"
                   " month (payroll_allocation = per_deduction)", aid, month, rule="payroll_allocation"))
        gap -= allocation
    if gap == 0:
        return
    if abs(gap) <= plan.tolerance_cents:
        b.add(Item("tolerance", gap, f"{aid} {month:%Y-%m}: {format_cents(abs(gap))}"
                   f" {'short' if gap < 0 else 'over'}, within the plan's tolerance of"
                   f" {format_cents(plan.tolerance_cents)}", aid, month, rule="tolerance"))
        return
    if not applied:
        view = MonthView.of(account, b.books.result.partitions.get(account.partition) or _no_part(account),
                            plan, m.month.isoformat() if m.month else "-", priced_segments(account, month, plan))
        deadline = payment_rules.payment_deadline(view)
        today = view.part.business_date
        if deadline is not None and (today is None or today <= deadline):
            b.add(Item("not_yet_due", gap, f"{aid} {month:%Y-%m}: {format_cents(-gap)} unpaid, due {m.due_on},"
                       f" not missing before {deadline} (business date {today or 'none yet'})", aid, month,
                       rule="grace_period"))
            return
    b.add(Item("residual", gap, f"{aid} {month:%Y-%m}: billed {format_cents(net)}, paid {format_cents(paid_all)}:"
               f" {format_cents(gap)} that no finding explains", aid, month))


def _no_part(account: AccountState) -> Any:
    from processor.state import PartitionState

    return PartitionState(partition=account.partition)


def _pair_cash_applications(b: _Builder) -> None:
    """A line moved by a cash application and the payment it became, both on this worksheet, net to 0:
    show them as one item that names both."""
    out: list[Item] = []
    moved = {i.event_ids[0]: i for i in b.items if i.kind == "cash_applied" and i.cents > 0 and i.event_ids}
    paired: set[int] = set()
    for i in b.items:
        if i.kind == "cash_applied" and i.cents < 0 and i.event_ids:
            source = moved.get(i.event_ids[0].removesuffix(":payment"))
            if source is not None and source.cents == -i.cents:
                paired.add(id(source))
                out.append(Item("cash_applied", 0, f"{source.description}; posted there on this month"
                                f" ({format_cents(source.cents)} moved, {format_cents(0)} net)",
                                source.account_id, source.coverage_month, source.discrepancy_id,
                                rule="cash_applied", event_ids=(*source.event_ids, *i.event_ids)))
                continue
        out.append(i)
    b.items = [i for i in out if id(i) not in paired]


def worksheets(books: Books, payer_id: str | None = None) -> list[Worksheet]:
    """Every (agency, coverage month) worksheet the books have: each month billed to an agency or paid by
    one (direct-pay members are their own payer and are left out)."""
    pairs: set[tuple[str, date]] = set()
    for account in books.accounts.values():
        for m in account.months.values():
            if m.month is None:
                continue
            if m.bills:
                payer = bill_payer(account, m)
                if payer != account.account_id:
                    pairs.add((payer, m.month))
            for p in m.payments:
                if p.payer_id != account.account_id and p.method not in ("direct", "card"):
                    pairs.add((p.payer_id, m.month))
    return [worksheet(books, p, m) for p, m in sorted(pairs) if payer_id is None or p == payer_id]
