"""Billing: premium bills and adjustments on a member-month, the billing cycle close, and what a bill
can be wrong about (wrong rate, billed without coverage, coverage never billed). Pure."""

from __future__ import annotations

from events.money import format_cents as cents
from events.types import AdjustmentPosted, BillingCycleClosed, PremiumBilled
from processor.rules.base import Finding, MonthView, Outcome, Rejected, month_state
from processor.rules.coverage import ended_by, plan_ended_before, priced_segments, terminated_before
from processor.rules.pricing import plan_premium
from processor.settings import PlanSettings
from processor.state import (
    PAYMENT_APPLIED,
    PAYMENT_HELD,
    AccountState,
    AdjustmentLine,
    BillLine,
    PartitionState,
    month_key,
)


def on_bill(account: AccountState, part: PartitionState, e: PremiumBilled, plan: PlanSettings) -> Outcome:
    """Post a bill on its month; cash that arrived before its bill is applied now."""
    if e.bill_id in account.bill_months:
        raise Rejected(f"bill {e.bill_id} is already posted under another event id", field="bill_id")
    out = Outcome()
    key = month_key(e.coverage_month)
    account.bill_months[e.bill_id] = key
    month = month_state(account, e.coverage_month)
    month.bills.append(BillLine(
        bill_id=e.bill_id, plan=e.plan, tier=e.tier, amount_cents=e.amount_cents, due_on=e.due_on,
        agency_id=e.agency_id, event_id=e.event_id,
    ))
    for p in month.payments:
        if p.status == PAYMENT_HELD:
            p.status = PAYMENT_APPLIED
            out.unapplied(p.payer_id, -p.amount_cents)
    out.touch(key)
    return out


def on_adjustment(account: AccountState, part: PartitionState, e: AdjustmentPosted, plan: PlanSettings) -> Outcome:
    """A signed correction to a month's billed amount; never an edit of the bill."""
    if any(a.adjustment_id == e.adjustment_id for m in account.months.values() for a in m.adjustments):
        raise Rejected(f"adjustment {e.adjustment_id} is already posted", field="adjustment_id")
    month_state(account, e.coverage_month).adjustments.append(AdjustmentLine(
        adjustment_id=e.adjustment_id, plan=e.plan, amount_cents=e.amount_cents, event_id=e.event_id,
    ))
    out = Outcome()
    out.touch(month_key(e.coverage_month))
    return out


def close_cycle(part: PartitionState, e: BillingCycleClosed) -> None:
    """The partition's record of the latest closed billing cycle (they close in order)."""
    if part.billing_closed_through is not None and e.cycle_month < part.billing_closed_through:
        raise Rejected(
            f"billing cycle {e.cycle_month:%Y-%m} is before the closed cycle {part.billing_closed_through:%Y-%m}",
            field="cycle_month",
        )
    part.billing_closed_through = e.cycle_month
    part.billing_closed_event_id = e.event_id
    if part.billing_closed_from is None:
        part.billing_closed_from = e.cycle_month


def cycle_touches(account: AccountState, part: PartitionState, e: BillingCycleClosed, plan: PlanSettings) -> Outcome:
    """The cycle month of an account with coverage is judged, billed or not."""
    out = Outcome()
    key = month_key(e.cycle_month)
    month = account.months.get(key)
    if month is not None and month.bills:
        return out  # a billed month: nothing a closing cycle can change
    if month is not None or priced_segments(account, e.cycle_month, plan):
        month_state(account, e.cycle_month)
        out.touch(key)
    return out


def find_bill_errors(v: MonthView) -> list[Finding]:
    """Per plan billed: ``wrong_rate`` when the bill differs from what the coverage costs; one
    ``billed_not_enrolled`` for the month's bills of plans with no coverage in force."""
    m, month = v.m, v.month
    if m is None or not month.bills:
        return []
    found = []
    by_plan: dict[str, list[BillLine]] = {}
    for b in month.bills:
        by_plan.setdefault(b.plan, []).append(b)
    unenrolled: list[tuple[str, int, tuple[str, ...], str | None]] = []
    for plan_id, bills in sorted(by_plan.items()):
        billed = sum(b.amount_cents for b in bills) + sum(
            a.amount_cents for a in month.adjustments if a.plan == plan_id
        )
        causes = tuple(b.event_id for b in bills)
        segs = [s for s in v.priced if s.plan == plan_id]
        if not segs:
            if billed != 0:  # billed, then fully credited back: nothing is owed
                unenrolled.append((plan_id, billed, causes, bills[0].agency_id))
            continue
        premium, rate_ids = plan_premium(segs, v.part, m, v.plan)
        if premium is None or billed == premium:
            continue
        seg = segs[0]
        what = ("the premium for the month of the retiree's death is waived" if premium == 0
                and seg.end_reason == "death" else
                f"the {'COBRA premium' if seg.status == 'cobra' else 'rate'} is {cents(premium)}"
                + (" for the days covered" if v.plan.proration == "daily" else ""))
        found.append(Finding(
            kind="wrong_rate", key=f"wrong_rate|{v.key}|{plan_id}", month=m,
            payer_id=bills[0].agency_id, expected_cents=premium, actual_cents=billed,
            cause_event_ids=(*causes, *(s.event_id for s in segs), *rate_ids),
            explanation=f"billed {cents(billed)} for {plan_id}/{'+'.join(s.tier for s in segs)} in"
            f" {m:%Y-%m}; {what}",
            action="correct the bill with an adjustment or fix the rate table", actor="billing",
        ))
    if unenrolled:
        # One finding per month: billing must cancel every bill of the month with no coverage.
        total = sum(u[1] for u in unenrolled)
        ended = terminated_before(v.account, m)
        terminations = tuple(dict.fromkeys(
            e for plan_id, *_ in unenrolled for e in ended_by(plan_ended_before(v.account, m, plan_id))
        ))
        found.append(Finding(
            kind="billed_not_enrolled", key=f"billed_not_enrolled|{v.key}", month=m,
            payer_id=unenrolled[0][3], expected_cents=0, actual_cents=total,
            cause_event_ids=tuple(c for u in unenrolled for c in u[2]) + (terminations or ended_by(ended)),
            explanation=f"billed {cents(total)} for {', '.join(u[0] for u in unenrolled)} in {m:%Y-%m}"
            " with no coverage in force" + (f" (coverage ended {ended.end})" if ended else ""),
            action="cancel the bills or process the missing enrollment", actor="billing",
        ))
    return found


def find_enrolled_not_billed(v: MonthView) -> list[Finding]:
    """Coverage in force in a month whose billing cycle closed without a bill."""
    m, part = v.m, v.part
    if (m is None or v.month.bills or part.billing_closed_through is None or m > part.billing_closed_through
            or not v.priced):
        return []
    expected = v.month.expected_cents or 0
    return [Finding(
        kind="enrolled_not_billed", key=f"enrolled_not_billed|{v.key}", month=m,
        payer_id=v.priced[0].agency_id, expected_cents=expected, actual_cents=v.net_billed,
        cause_event_ids=tuple(s.event_id for s in v.priced)
        + ((part.billing_closed_event_id,) if part.billing_closed_event_id else ()),
        explanation=f"coverage ({', '.join(s.plan + '/' + s.tier for s in v.priced)}) was in force in"
        f" {m:%Y-%m} and the billing cycle closed without a bill",
        action=f"bill {cents(expected)} for {m:%Y-%m}; check why the enrollment missed billing",
        actor="billing",
    )]
