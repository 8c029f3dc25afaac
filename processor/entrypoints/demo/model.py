"""The demo's own model of the ledger's rules, written from DOMAIN.md and the README, never from the
ledger's rule code (processor/rules, fold, fsa, tax, state): a check against the code it checks would
be vacuous. tests/unit/test_demo_package.py walks this package's imports to keep it so.

It knows what the enrollment and the rate tables call for (coverage segments, whole-month or daily
pricing, COBRA at 102%; a change for coverage not enrolled yet waits for its add), who may be covered on
a tier (the plan's tier rules, a child's age limit), where cash goes (applied to a billed month, held,
after termination, a duplicate, moved by a cash application, reversed; a member's direct payment naming
no month to the oldest month with a balance due), what each member-month holds (billed, adjusted, paid,
unapplied, refunded, balance = billed + adjustments - paid + refunds), and the unapplied cash of every
payer (held lines, and what a remittance pays beyond the lines posted from it). ``Model.apply`` takes
the program's events in the order the ledger folds them; the generator prices its bills with it, and
the oracle (oracle.py) reads the amounts every discrepancy, member-month and payer must show.
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
    PaymentReversed,
    PremiumBilled,
    RatePublished,
    RefundIssued,
    RefundReturned,
    RemittanceReceived,
)
from processor.settings import PlanSettings, TierRule

# Where a payment line stands (README, "unmatched_payment", "duplicate_payment", "paid_after_termination").
APPLIED, HELD, AFTER_TERMINATION, DUPLICATE, MOVED, REVERSED = (
    "applied", "held", "after_termination", "duplicate", "moved", "reversed")
UNAPPLIED = (HELD, AFTER_TERMINATION, DUPLICATE)  # cash on the payer's account, not paid on the month
UNPRICED_LINES = ("fsa", "dcap")  # flexible spending accounts: elections and contributions, no premium
PARTNERS = ("spouse", "domestic_partner")
PAYER_PREFIX = "payer:"  # a payer's remittances live on account payer:<payer id>


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
    birth_date: date | None = None
    tax_dependent: bool = True

    def priced_from(self, plan: PlanSettings) -> date:
        """``first_of_month_following``: coverage that begins after the 1st is priced from the next month."""
        if plan.coverage_start == "first_of_month_following" and self.begin.day != 1:
            return add_months(self.begin, 1)
        return self.begin

    def in_month(self, month: date, plan: PlanSettings) -> bool:
        return self.priced_from(plan) <= last_day(month) and (self.end is None or self.end >= month)

    def covers(self, day: date) -> bool:
        return self.begin <= day and (self.end is None or self.end >= day)


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
    in_month = [s for s in segments if s.relationship == "self" and s.line not in UNPRICED_LINES
                and s.in_month(month, plan)]
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


def fits(rule: TierRule, partners: int, children: int) -> bool:
    """Does a tier's rule allow these dependents (README, plan.tiers; at most one partner)?"""
    allowed = {"none": lambda n: n == 0, "required": lambda n: n >= 1, "any": lambda n: True}
    total = partners + children
    return (partners <= 1 and allowed[rule.partner](partners) and allowed[rule.children](children)
            and total >= rule.dependents_min and (rule.dependents_max is None or total <= rule.dependents_max))


def coverage_ends_at_age(birth: date, age: int) -> date:
    """A child's coverage under an age limit runs through the end of the month of that birthday."""
    return last_day(date(birth.year + age, birth.month, 1))


@dataclass
class PaymentLine:
    payment_id: str
    amount: int
    payer: str
    trace: str | None
    status: str
    tax_treatment: str | None
    plan: str | None = None  # the coverage the line names, if any (one line per policy is no duplicate)
    line: str | None = None


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
class Remittance:
    """A payer's remittance as the ledger reconciles it: the header's total against the lines posted."""

    total: int | None = None  # BPR02, once the header is in
    line_count: int = 0
    posted: int = 0  # the lines applied on members' accounts (the ledger reports each to the payer)
    posted_count: int = 0

    @property
    def complete(self) -> bool:
        return self.total is not None and self.posted_count >= self.line_count


@dataclass
class Account:
    segments: list[Segment] = field(default_factory=list)
    cells: dict[date | None, Cell] = field(default_factory=dict)
    payments: dict[str, date | None] = field(default_factory=dict)  # payment id -> month
    remittances: dict[str, Remittance] = field(default_factory=dict)  # payer accounts: remittance id -> it
    waiting: list[EnrollmentChanged] = field(default_factory=list)  # changes of coverage not enrolled yet

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
        self.cycles: tuple[date, date] | None = None  # the first and the latest billing cycle closed
        self._apply: dict[type[Any], Callable[[Any], None]] = {
            RatePublished: self.rates.publish,
            EnrollmentChanged: self._enrollment,
            PremiumBilled: self._bill,
            PaymentReceived: self._payment,
            PaymentReversed: self._reversal,
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
        """834 maintenance. A change, termination or reinstatement of a coverage the ledger has no
        enrollment of waits (unknown_coverage) and is applied, in effective order, when its add arrives;
        the books then stand as if the events had come in order."""
        acc = self.account(e.account_id)
        known = any(s.member_id == e.member_id and s.line == e.coverage_line for s in acc.segments)
        if e.action != "add" and not known:
            acc.waiting.append(e)
            return
        self._maintain(acc, e)
        if e.action == "add":
            kept = [w for w in acc.waiting if (w.member_id, w.coverage_line) == (e.member_id, e.coverage_line)]
            acc.waiting = [w for w in acc.waiting if w not in kept]
            for w in sorted(kept, key=lambda w: (change_date(w), w.occurred_at)):
                self._maintain(acc, w)
        # cash for months not billed is placed again: a retroactive termination makes it cash after termination
        for month, cell in acc.cells.items():
            if not cell.bills:
                for p in cell.lines:
                    if p.status in (HELD, AFTER_TERMINATION):
                        p.status = self._placement(acc, month, cell)
        # a subscriber's coverage reported after the billing cycles of its months closed: each of those
        # months is on the books, to be judged (an enrolled, not billed month whenever HR's 834 comes)
        if self.cycles is not None and e.relationship == "self":
            first_closed, closed_through = self.cycles
            for seg in (s for s in acc.segments if s.member_id == e.member_id and s.line == e.coverage_line):
                month = max(seg.priced_from(self.plan).replace(day=1), first_closed)
                through = closed_through if seg.end is None else min(seg.end.replace(day=1), closed_through)
                while month <= through:
                    acc.cell(month)
                    month = add_months(month, 1)

    def _maintain(self, acc: Account, e: EnrollmentChanged) -> None:
        """Add a segment, change terms from a date on, or end the coverage."""
        mine = [s for s in acc.segments if s.member_id == e.member_id and s.line == e.coverage_line]

        def new(begin: date, end: date | None) -> Segment:
            assert e.tier is not None, "the demo's program always states the tier"
            return Segment(e.member_id, e.relationship, e.coverage_line, e.plan, e.tier, e.status, begin, end,
                           e.birth_date, e.tax_dependent)

        if e.action == "add":
            acc.segments.append(new(e.benefit_begin, e.benefit_end))
        elif e.action == "change":
            at = e.benefit_begin
            current = next((s for s in mine if s.covers(at)), None)
            if current is None:
                acc.segments.append(new(at, e.benefit_end))
            else:
                acc.segments.append(new(at, e.benefit_end if e.benefit_end is not None else current.end))
                if current.begin == at:
                    acc.segments.remove(current)
                else:
                    current.end = at - timedelta(days=1)
        elif e.action == "terminate":
            last = change_date(e)
            for s in mine:
                if s.begin > last:
                    acc.segments.remove(s)
                elif s.end is None or s.end > last:
                    s.end = last
        else:
            raise ValueError(f"the demo's model does not know enrollment action {e.action!r}")

    def _placement(self, acc: Account, month: date | None, cell: Cell) -> str:
        if month is None:
            return HELD
        if cell.bills:
            return APPLIED
        subscriber = [s for s in acc.segments if s.relationship == "self" and s.line not in UNPRICED_LINES]
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
        month = e.coverage_month
        acc = self.account(e.account_id)
        if month is None and self.plan.unmonthed_direct_payments == "oldest_first" and (
                e.method in ("direct", "card") or e.payer_id == e.account_id):
            # the member's own payment naming no month pays the oldest month with a balance due
            month = min((m for m, c in acc.cells.items() if m is not None and c.balance > 0), default=None)
        self._post(e.account_id, month, PaymentLine(
            e.payment_id, e.amount_cents, e.payer_id, e.trace_number, "", e.tax_treatment, e.plan, e.coverage_line))
        if e.remittance_id is not None and e.source != LEDGER and not e.account_id.startswith(PAYER_PREFIX):
            # the ledger reports the line to the payer's account, where the remittance is reconciled
            remittance = self.account(PAYER_PREFIX + e.payer_id).remittances.setdefault(e.remittance_id, Remittance())
            remittance.posted += e.amount_cents
            remittance.posted_count += 1

    def _post(self, account_id: str, month: date | None, line: PaymentLine) -> None:
        acc = self.account(account_id)
        cell = acc.cell(month)
        repeated = line.trace is not None and month is not None and any(
            p.trace == line.trace and p.status != REVERSED and (p.plan, p.line) == (line.plan, line.line)
            for p in cell.lines)
        line.status = DUPLICATE if repeated else self._placement(acc, month, cell)
        cell.lines.append(line)
        acc.payments[line.payment_id] = month

    def _reversal(self, e: PaymentReversed) -> None:
        """The payment bounced (NSF, a returned ACH): it pays nothing any more."""
        line = self.account(e.account_id).line(e.payment_id)
        assert line.status not in (REVERSED, MOVED), (e, line)
        line.status = REVERSED

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
        remittance = self.account(e.account_id).remittances.setdefault(e.remittance_id, Remittance())
        remittance.total, remittance.line_count = e.total_cents, e.line_count

    def _billing_cycle_closed(self, e: BillingCycleClosed) -> None:
        """A covered month with no row yet gets one (an enrolled, not billed month shows up)."""
        self.cycles = (self.cycles[0] if self.cycles else e.cycle_month, e.cycle_month)
        for account_id, acc in self.accounts.items():
            if e.cycle_month not in acc.cells and self.priced(account_id, e.cycle_month):
                acc.cell(e.cycle_month)

    # -- what the books show ------------------------------------------------------------------

    def figures(self, account_id: str, month: date) -> MonthFigures:
        cell = self.accounts[account_id].cells[month]
        return MonthFigures(expected=self.premium(account_id, month), billed=cell.billed, adjusted=cell.adjusted,
                            paid=cell.paid, unapplied=cell.unapplied, refunded=cell.refunded, balance=cell.balance)

    def months(self) -> dict[tuple[str, date], MonthFigures]:
        """Every member-month row the ledger must have (months named by a bill, payment, adjustment,
        a closed billing cycle or a late enrollment), with its figures."""
        return {(a, m): self.figures(a, m) for a, acc in sorted(self.accounts.items())
                for m in sorted(k for k in acc.cells if k is not None)}

    def unapplied(self) -> dict[str, int]:
        """Unapplied cash by payer (non-zero only): lines held, after termination or duplicated, and what
        each remittance paid beyond the lines posted from it (cash is never dropped)."""
        out: dict[str, int] = {}
        for account_id, acc in self.accounts.items():
            for cell in acc.cells.values():
                for p in cell.lines:
                    if p.status in UNAPPLIED:
                        out[p.payer] = out.get(p.payer, 0) + p.amount
            for r in acc.remittances.values():
                assert r.total is None or r.complete, f"a remittance of {account_id} is missing lines"
                if r.total is not None and r.total > r.posted:
                    payer = account_id.removeprefix(PAYER_PREFIX)
                    out[payer] = out.get(payer, 0) + r.total - r.posted
        return {p: c for p, c in sorted(out.items()) if c}

    def owed(self, cell: Cell) -> int:
        """What a month's payments must add up to: its bills net of adjustments (the demo's payroll pays
        monthly, one deduction a month)."""
        return cell.net_billed

    def counted_refunds(self, cell: Cell) -> int:
        """The refunds a month's payment gap counts: all of them, but when a payment was reversed only up
        to the credit still there; the rest was refunded out of money the ledger no longer has."""
        if any(p.status == REVERSED for p in cell.lines):
            return min(cell.refunded, max(0, cell.paid - self.owed(cell)))
        return cell.refunded

    def prices_partner(self, account_id: str, month: date) -> bool:
        """Does the month's premium price a domestic partner who is not a tax dependent (README, Section
        125: covered on the first day a subscriber's coverage of the line is priced for in the month; a
        partner added on the 15th of a month priced at the tier in force on the 1st is not in it)? That
        share is post-tax."""
        acc = self.accounts.get(account_id)
        if acc is None:
            return False
        partners = [d for d in acc.segments if d.relationship == "domestic_partner" and not d.tax_dependent]
        return any(d.line == seg.line and d.covers(max(seg.priced_from(self.plan), month))
                   for seg in self.priced(account_id, month) for d in partners)

    def eligibility(self, account_id: str, month: date) -> tuple[int, int] | None:
        """(expected, actual) of the month's eligibility finding, if its tier does not fit who is covered
        or a child is covered past the age limit: the premium of the first tier (in the plan's order, with
        a rate) that fits the eligible people, and the premium at the tier in force. A line is judged
        only when dependents were ever reported on it; the dependents counted are those covered on the
        first day the month is priced for (README, "eligibility")."""
        acc, plan = self.accounts[account_id], self.plan
        found: dict[str, tuple[int, int]] = {}
        for seg in sorted(self.priced(account_id, month), key=lambda s: (s.line, s.begin)):
            reported = [d for d in acc.segments if d.relationship != "self" and d.line == seg.line]
            if not reported:
                continue
            start = max(seg.priced_from(plan), month)
            covered = [d for d in reported if d.covers(start)]
            limit = plan.child_age_limits.get(seg.line)
            aged = [d for d in covered if limit is not None and d.relationship == "child"
                    and d.birth_date is not None and start > coverage_ends_at_age(d.birth_date, limit)]
            eligible = [d for d in covered if d not in aged]
            partners = sum(1 for d in eligible if d.relationship in PARTNERS)
            children = sum(1 for d in eligible if d.relationship == "child")
            rule = plan.tiers.get(seg.tier)
            wrong_tier = rule is not None and not fits(rule, partners, children)
            if not wrong_tier and not aged:
                continue
            tier = seg.tier
            if wrong_tier:
                tier = next((t for t, r in plan.tiers.items() if fits(r, partners, children)
                             and self.rates.total(seg.plan, t, month) is not None), seg.tier)
            rate, right = self.rates.total(seg.plan, seg.tier, month), self.rates.total(seg.plan, tier, month)
            found[seg.line] = (0 if right is None else segment_premium(seg, right, month, plan),
                               0 if rate is None else segment_premium(seg, rate, month, plan))
        assert len(found) <= 1, f"the demo reports dependents on one line only: {found}"
        return next(iter(found.values()), None)

    def amounts(self, kind: str, account_id: str, month: date | None) -> tuple[int, int]:
        """(expected_cents, actual_cents) a discrepancy of this kind states for the month now, as the
        README's table of discrepancies defines them (the demo puts one finding of a kind on a month)."""
        acc = self.accounts[account_id]
        if kind == "remittance_total_mismatch":
            r = next(r for r in reversed(acc.remittances.values()) if r.total is not None and r.total != r.posted)
            assert r.total is not None
            return r.posted, r.total
        if kind == "unknown_coverage":
            return 0, 0
        by_status = {"unmatched_payment": HELD, "duplicate_payment": DUPLICATE,
                     "paid_after_termination": AFTER_TERMINATION}
        if kind in by_status:
            return 0, sum(p.amount for p in acc.cells[month].lines if p.status == by_status[kind])
        assert month is not None
        cell = acc.cells[month]
        net = cell.net_billed
        if kind in ("underpaid", "cobra_shortfall"):
            return (self.owed(cell) if kind == "underpaid" else net), cell.paid
        if kind in ("overpaid", "refund_due"):
            return (self.owed(cell) if kind == "overpaid" else net), cell.paid - self.counted_refunds(cell)
        if kind == "refund_recovery":
            return max(0, cell.paid - self.owed(cell)), cell.refunded
        if kind == "missing_payment":
            return net, 0
        if kind in ("enrolled_not_billed", "retroactive_change"):
            return self.premium(account_id, month) or 0, net
        if kind == "eligibility":
            found = self.eligibility(account_id, month)
            assert found is not None, f"no eligibility finding on {account_id} {month}"
            return found
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
        if kind == "tax_treatment":
            return 0, sum(p.amount for p in cell.lines if p.status == APPLIED and p.tax_treatment == "pre_tax")
        raise ValueError(f"the demo's model states no amounts for {kind}")


LEDGER = "benefits-ledger"  # the source of the events the ledger posts itself (a cash application's payment)


def change_date(e: EnrollmentChanged) -> date:
    """The day a change takes effect: a termination's last covered day, otherwise its benefit begin."""
    return e.benefit_end if e.action == "terminate" and e.benefit_end is not None else e.benefit_begin
