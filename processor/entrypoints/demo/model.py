"""The demo's own model of the ledger's rules, written from DOMAIN.md and the README, never from the
ledger's rule code (processor/rules, fold, fsa, tax, state): a check against the code it checks would
be vacuous. tests/unit/test_demo_package.py walks this package's imports to keep it so.

It knows what the enrollment and the rate tables call for (coverage segments, whole-month or daily
pricing, COBRA at 102%), where cash goes (applied to a billed month, held, after termination, a
duplicate, moved by a cash application), and what each member-month holds (billed, adjusted, paid,
unapplied, refunded, balance = billed + adjustments - paid + refunds). ``Model.apply`` takes the
program's events in the order the ledger folds them; the generator prices its bills with it, and the
oracle (oracle.py) reads the amounts every discrepancy and member-month must show.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from events.types import (
    AdjustmentPosted,
    BillingCycleClosed,
    CashApplied,
    EnrollmentChanged,
    Event,
    PaymentReceived,
    PremiumBilled,
    RatePublished,
    RefundIssued,
    RefundReturned,
    RemittanceReceived,
)
from processor.settings import PlanSettings

# Where a payment line stands (README, "unmatched_payment", "duplicate_payment", "paid_after_termination").
APPLIED, HELD, AFTER_TERMINATION, DUPLICATE, MOVED = "applied", "held", "after_termination", "duplicate", "moved"
UNAPPLIED = (HELD, AFTER_TERMINATION, DUPLICATE)  # cash on the payer's account, not paid on the month


def last_day(month: date) -> date:
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def add_months(d: date, n: int) -> date:
    """The first of the month ``n`` months after the month of ``d``."""
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, 1)


def half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up to an integer (both non-negative)."""
    return (2 * numerator + denominator) // (2 * denominator)


# ---------------------------------------------------------------------------------------------
# Coverage and pricing


@dataclass
class Segment:
    """One member's coverage on one line over [begin, end] (end None: open)."""

    member_id: str
    relationship: str
    line: str
    plan: str
    tier: str
    status: str
    begin: date
    end: date | None = None

    def priced_from(self, plan: PlanSettings) -> date:
        """``first_of_month_following``: coverage that begins after the 1st is priced from the next month."""
        if plan.coverage_start == "first_of_month_following" and self.begin.day != 1:
            return add_months(self.begin, 1)
        return self.begin

    def in_month(self, month: date, plan: PlanSettings) -> bool:
        return self.priced_from(plan) <= last_day(month) and (self.end is None or self.end >= month)


class Rates:
    """The rate table as published: a later publication for a month overrides an earlier one."""

    def __init__(self) -> None:
        self._published: dict[tuple[str, str], list[tuple[date, date | None, int]]] = {}

    def publish(self, e: RatePublished) -> None:
        self._published.setdefault((e.plan, e.tier), []).append((e.month_from, e.month_through, e.total_cents))

    def total(self, plan: str, tier: str, month: date) -> int | None:
        for first, through, total in reversed(self._published.get((plan, tier), [])):
            if first <= month and (through is None or month <= through):
                return total
        return None


def priced(segments: list[Segment], month: date, plan: PlanSettings) -> list[Segment]:
    """The subscriber's segments that price the month. Whole months: per line, the segment in force on
    the 1st, else the first to begin in the month. Daily: every segment in force in the month."""
    in_month = [s for s in segments if s.relationship == "self" and s.in_month(month, plan)]
    if plan.proration == "daily":
        return in_month
    chosen: dict[str, Segment] = {}
    for line in sorted({s.line for s in in_month}):
        of_line = [s for s in in_month if s.line == line]
        on_first = [s for s in of_line if s.priced_from(plan) <= month]
        chosen[line] = max(on_first, key=lambda s: s.begin) if on_first else min(of_line, key=lambda s: s.begin)
    return list(chosen.values())


def segment_premium(seg: Segment, total: int, month: date, plan: PlanSettings) -> int:
    """One segment's premium for the month: the plan cost, COBRA at cobra_premium_percent of it, and
    under daily proration its days in the month over the month's days; each rounded half up."""
    amount = half_up(total * plan.cobra_premium_percent, 100) if seg.status == "cobra" else total
    if plan.proration == "daily":
        last = last_day(month)
        days = (min(seg.end or last, last) - max(seg.priced_from(plan), month)).days + 1
        amount = half_up(amount * days, last.day)
    return amount


# ---------------------------------------------------------------------------------------------
# The books


@dataclass
class PaymentLine:
    payment_id: str
    amount: int
    payer: str
    trace: str | None
    status: str
    tax_treatment: str | None


@dataclass
class Cell:
    """One member-month of an account (month None: payments that named no month)."""

    bills: dict[str, int] = field(default_factory=dict)  # plan -> billed
    adjustments: list[tuple[str | None, int]] = field(default_factory=list)  # (plan, signed cents)
    lines: list[PaymentLine] = field(default_factory=list)
    refunds: dict[str, int] = field(default_factory=dict)  # refund id -> cents, while not returned

    @property
    def billed(self) -> int:
        return sum(self.bills.values())

    @property
    def adjusted(self) -> int:
        return sum(a for _, a in self.adjustments)

    @property
    def net_billed(self) -> int:
        return self.billed + self.adjusted

    @property
    def paid(self) -> int:
        return sum(p.amount for p in self.lines if p.status == APPLIED)

    @property
    def unapplied(self) -> int:
        return sum(p.amount for p in self.lines if p.status in UNAPPLIED)

    @property
    def refunded(self) -> int:
        return sum(self.refunds.values())

    @property
    def balance(self) -> int:
        """DOMAIN.md: balance due = billed + adjustments - paid + refunds; negative is a credit."""
        return self.billed + self.adjusted - self.paid + self.refunded

    def plan_billed(self, plan_id: str) -> int:
        return self.bills.get(plan_id, 0) + sum(a for p, a in self.adjustments if p == plan_id)


@dataclass
class Account:
    segments: list[Segment] = field(default_factory=list)
    cells: dict[date | None, Cell] = field(default_factory=dict)
    payments: dict[str, date | None] = field(default_factory=dict)  # payment id -> month
    remittances: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (lines total, total)

    def cell(self, month: date | None) -> Cell:
        return self.cells.setdefault(month, Cell())

    def line(self, payment_id: str) -> PaymentLine:
        month = self.payments[payment_id]
        return next(p for p in self.cells[month].lines if p.payment_id == payment_id)


@dataclass(frozen=True)
class MonthFigures:
    """What a member-month must show: the member_month row, field by field."""

    expected: int | None
    billed: int
    adjusted: int
    paid: int
    unapplied: int
    refunded: int
    balance: int


class Model:
    """The ledger as the rules say it must be, event by event (see the module docstring)."""

    def __init__(self, plan: PlanSettings) -> None:
        self.plan = plan
        self.rates = Rates()
        self.accounts: dict[str, Account] = {}
        self._apply: dict[type[Any], Callable[[Any], None]] = {
            RatePublished: self.rates.publish,
            EnrollmentChanged: self._enrollment,
            PremiumBilled: self._bill,
            PaymentReceived: self._payment,
            CashApplied: self._cash_applied,
            RefundIssued: self._refund,
            RefundReturned: self._refund_returned,
            AdjustmentPosted: self._adjustment,
            RemittanceReceived: self._remittance,
            BillingCycleClosed: self._billing_cycle_closed,
        }

    def account(self, account_id: str) -> Account:
        return self.accounts.setdefault(account_id, Account())

    def apply(self, event: Event) -> None:
        """Fold one event; the kinds that move no premium account (business days, FSA) change nothing here."""
        handler = self._apply.get(type(event))
        if handler is not None:
            handler(event)

    # -- pricing ------------------------------------------------------------------------------

    def priced(self, account_id: str, month: date) -> list[Segment]:
        return priced(self.account(account_id).segments, month, self.plan)

    def premium(self, account_id: str, month: date, plan_id: str | None = None) -> int | None:
        """What the enrollment and rates call for in the month (one plan's part with ``plan_id``);
        None while a rate is not known."""
        total = 0
        for seg in self.priced(account_id, month):
            if plan_id is not None and seg.plan != plan_id:
                continue
            rate = self.rates.total(seg.plan, seg.tier, month)
            if rate is None:
                return None
            total += segment_premium(seg, rate, month, self.plan)
        return total

    def bills_due(self, account_id: str, month: date) -> list[tuple[str, str, str, int]]:
        """The bills the month calls for: (coverage line, plan, tier, amount), one per line and plan;
        under daily proration a line changed within the month sums its segments (the later tier named)."""
        out: dict[tuple[str, str], tuple[str, int]] = {}
        for seg in sorted(self.priced(account_id, month), key=lambda s: s.begin):
            rate = self.rates.total(seg.plan, seg.tier, month)
            assert rate is not None, f"no rate for {seg.plan}/{seg.tier} in {month}"
            _, before = out.get((seg.line, seg.plan), (seg.tier, 0))
            out[(seg.line, seg.plan)] = (seg.tier, before + segment_premium(seg, rate, month, self.plan))
        return [(line, plan_id, tier, amount) for (line, plan_id), (tier, amount) in sorted(out.items())]

    # -- events -------------------------------------------------------------------------------

    def _enrollment(self, e: EnrollmentChanged) -> None:
        """834 maintenance: add a segment, change terms from a date on, or end the coverage."""
        acc = self.account(e.account_id)
        mine = [s for s in acc.segments if s.member_id == e.member_id and s.line == e.coverage_line]

        def new(begin: date, end: date | None) -> Segment:
            assert e.tier is not None, "the demo's program always states the tier"
            return Segment(e.member_id, e.relationship, e.coverage_line, e.plan, e.tier, e.status, begin, end)

        if e.action == "add":
            acc.segments.append(new(e.benefit_begin, e.benefit_end))
        elif e.action == "change":
            at = e.benefit_begin
            current = next((s for s in mine if s.begin <= at and (s.end is None or s.end >= at)), None)
            if current is None:
                acc.segments.append(new(at, e.benefit_end))
            else:
                acc.segments.append(new(at, e.benefit_end if e.benefit_end is not None else current.end))
                if current.begin == at:
                    acc.segments.remove(current)
                else:
                    current.end = at - timedelta(days=1)
        elif e.action == "terminate":
            last = e.benefit_end if e.benefit_end is not None else e.benefit_begin
            for s in mine:
                if s.begin > last:
                    acc.segments.remove(s)
                elif s.end is None or s.end > last:
                    s.end = last
        else:
            raise ValueError(f"the demo's model does not know enrollment action {e.action!r}")
        # cash for months not billed is placed again: a retroactive termination makes it cash after termination
        for month, cell in acc.cells.items():
            if not cell.bills:
                for p in cell.lines:
                    if p.status in (HELD, AFTER_TERMINATION):
                        p.status = self._placement(acc, month, cell)

    def _placement(self, acc: Account, month: date | None, cell: Cell) -> str:
        if month is None:
            return HELD
        if cell.bills:
            return APPLIED
        subscriber = [s for s in acc.segments if s.relationship == "self"]
        if not any(s.in_month(month, self.plan) for s in subscriber) and any(
                s.end is not None and s.end < month for s in subscriber):
            return AFTER_TERMINATION
        return HELD

    def _bill(self, e: PremiumBilled) -> None:
        cell = self.account(e.account_id).cell(e.coverage_month)
        cell.bills[e.plan] = cell.bills.get(e.plan, 0) + e.amount_cents
        for p in cell.lines:
            if p.status == HELD:
                p.status = APPLIED  # cash that came before its bill

    def _payment(self, e: PaymentReceived) -> None:
        self._post(e.account_id, e.coverage_month, PaymentLine(
            e.payment_id, e.amount_cents, e.payer_id, e.trace_number, "", e.tax_treatment))

    def _post(self, account_id: str, month: date | None, line: PaymentLine) -> None:
        acc = self.account(account_id)
        cell = acc.cell(month)
        repeated = line.trace is not None and month is not None and any(
            p.trace == line.trace for p in cell.lines)  # the demo reverses no payment
        line.status = DUPLICATE if repeated else self._placement(acc, month, cell)
        cell.lines.append(line)
        acc.payments[line.payment_id] = month

    def _cash_applied(self, e: CashApplied) -> None:
        """The held cash leaves this account whole and is posted, as a payment of the same payer and
        application id, to the member-month it belongs to (the ledger does that through its outbox)."""
        line = self.account(e.account_id).line(e.payment_id)
        assert line.status in UNAPPLIED and line.amount == e.amount_cents, (e, line)
        line.status = MOVED
        self._post(e.to_account_id, e.to_coverage_month, PaymentLine(
            e.application_id, e.amount_cents, line.payer, None, "", line.tax_treatment))

    def _refund(self, e: RefundIssued) -> None:
        assert e.payment_id is None and e.coverage_month is not None, "the demo refunds a month's credit"
        cell = self.account(e.account_id).cells[e.coverage_month]
        assert e.amount_cents <= -cell.balance, (e, cell)
        cell.refunds[e.refund_id] = e.amount_cents

    def _refund_returned(self, e: RefundReturned) -> None:
        for cell in self.account(e.account_id).cells.values():
            if cell.refunds.pop(e.refund_id, None) is not None:
                return
        raise AssertionError(f"refund {e.refund_id} is unknown on {e.account_id}")

    def _adjustment(self, e: AdjustmentPosted) -> None:
        self.account(e.account_id).cell(e.coverage_month).adjustments.append((e.plan, e.amount_cents))

    def _remittance(self, e: RemittanceReceived) -> None:
        self.account(e.account_id).remittances[e.remittance_id] = (e.lines_total_cents, e.total_cents)

    def _billing_cycle_closed(self, e: BillingCycleClosed) -> None:
        """A covered month with no row yet gets one (an enrolled, not billed month shows up)."""
        for account_id, acc in self.accounts.items():
            if e.cycle_month not in acc.cells and self.priced(account_id, e.cycle_month):
                acc.cell(e.cycle_month)

    # -- what the books show ------------------------------------------------------------------

    def figures(self, account_id: str, month: date) -> MonthFigures:
        cell = self.accounts[account_id].cells[month]
        return MonthFigures(expected=self.premium(account_id, month), billed=cell.billed, adjusted=cell.adjusted,
                            paid=cell.paid, unapplied=cell.unapplied, refunded=cell.refunded, balance=cell.balance)

    def months(self) -> dict[tuple[str, date], MonthFigures]:
        """Every member-month row the ledger must have (months named by a bill, payment, adjustment or
        a closed billing cycle), with its figures."""
        return {(a, m): self.figures(a, m) for a, acc in sorted(self.accounts.items())
                for m in sorted(k for k in acc.cells if k is not None)}

    def amounts(self, kind: str, account_id: str, month: date | None) -> tuple[int, int]:
        """(expected_cents, actual_cents) a discrepancy of this kind states for the month now, as the
        README's table of discrepancies defines them (the demo puts one finding of a kind on a month)."""
        acc = self.accounts[account_id]
        if kind == "remittance_total_mismatch":
            lines_total, total = next(t for t in reversed(acc.remittances.values()) if t[0] != t[1])
            return lines_total, total
        assert month is not None
        cell = acc.cells[month]
        net = cell.net_billed
        if kind in ("underpaid", "cobra_shortfall"):
            return net, cell.paid
        if kind in ("overpaid", "refund_due"):
            return net, cell.paid - cell.refunded
        if kind == "missing_payment":
            return net, 0
        if kind in ("enrolled_not_billed", "retroactive_change"):
            return self.premium(account_id, month) or 0, net
        if kind == "wrong_rate":
            plans = {s.plan for s in self.priced(account_id, month)}
            for plan_id in sorted(set(cell.bills) & plans):
                premium = self.premium(account_id, month, plan_id)
                if premium is not None and premium != cell.plan_billed(plan_id):
                    return premium, cell.plan_billed(plan_id)
            raise AssertionError(f"no wrong rate on {account_id} {month}")
        if kind == "billed_not_enrolled":
            plans = {s.plan for s in self.priced(account_id, month)}
            return 0, sum(cell.plan_billed(p) for p in cell.bills if p not in plans)
        by_status = {"unmatched_payment": HELD, "duplicate_payment": DUPLICATE,
                     "paid_after_termination": AFTER_TERMINATION}
        if kind in by_status:
            return 0, sum(p.amount for p in cell.lines if p.status == by_status[kind])
        if kind == "tax_treatment":
            return 0, sum(p.amount for p in cell.lines if p.status == APPLIED and p.tax_treatment == "pre_tax")
        raise ValueError(f"the demo's model states no amounts for {kind}")
