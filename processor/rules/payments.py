"""Payments: posting payment lines on member-months, reversals, cash applied elsewhere, remittances,
and what a month's payments can be wrong about (short, over, unmatched, duplicate, after termination,
missing). Pure.

A payment line is applied to a billed month; otherwise it is held as unapplied cash on the payer's
account (unmatched, after termination, or a duplicate of a line with the same trace) until a later
event places it: a bill, an enrollment change, a refund of it, or a cash application.
"""

from __future__ import annotations

from datetime import date, timedelta

from events.money import format_cents as cents
from events.types import CashApplied, PaymentReceived, PaymentReversed
from processor.rules import cobra
from processor.rules.base import LEDGER_SOURCE, Finding, MonthView, Outcome, Rejected, month_state
from processor.rules.coverage import closed_from, ended_by, subscriber_in_force, terminated_before
from processor.rules.dates import add_months, last_day
from processor.settings import PayCalendar, PlanSettings
from processor.state import (
    PAYMENT_ADVISED,
    PAYMENT_AFTER_TERM,
    PAYMENT_APPLIED,
    PAYMENT_DUPLICATE,
    PAYMENT_HELD,
    PAYMENT_MOVED,
    PAYMENT_REVERSED,
    UNAPPLIED_STATUSES,
    AccountState,
    MonthState,
    PartitionState,
    PaymentLine,
    month_key,
)

PAY_PERIODS_A_YEAR = {"weekly": 52, "biweekly": 26, "semi_monthly": 24}


# ---------------------------------------------------------------------------------------------
# Placing cash


def placement(account: AccountState, month: MonthState, plan: PlanSettings) -> str:
    """Where cash for a month goes when it is not a duplicate: applied, held, or after termination."""
    if month.month is None:
        return PAYMENT_HELD
    if month.bills:
        return PAYMENT_APPLIED
    if not subscriber_in_force(account, month.month, plan) and terminated_before(account, month.month):
        return PAYMENT_AFTER_TERM
    return PAYMENT_HELD


def replace_held(account: AccountState, plan: PlanSettings, since: date) -> None:
    """After an enrollment change (reaching back to ``since``), held and after-termination cash is
    placed again: a reinstatement turns a payment after termination into cash for the month, a
    retroactive termination the reverse."""
    for month in account.months.values():
        if month.bills or month.month is None or month.month < since:
            continue  # cash for a billed month is applied to the bill, whatever the coverage
        for p in month.payments:
            if p.status in (PAYMENT_HELD, PAYMENT_AFTER_TERM):
                p.status = placement(account, month, plan)


def payment_line(account: AccountState, payment_id: str) -> tuple[str, PaymentLine]:
    """The month key and line of a payment posted on this account; Rejected if there is none."""
    key = account.payment_months.get(payment_id)
    if key is None:
        raise Rejected(f"payment {payment_id} is unknown on account {account.account_id}", field="payment_id")
    return key, next(p for p in account.months[key].payments if p.payment_id == payment_id)


# ---------------------------------------------------------------------------------------------
# Handlers


def on_payment(account: AccountState, part: PartitionState, e: PaymentReceived, plan: PlanSettings) -> Outcome:
    if e.payment_id in account.payment_months:
        raise Rejected(f"payment {e.payment_id} is already posted under another event id", field="payment_id")
    out = Outcome()
    coverage_month = e.coverage_month
    if coverage_month is None and plan.unmonthed_direct_payments == "oldest_first" and _member_direct(account, e):
        coverage_month = oldest_balance_due(account)
    key = month_key(coverage_month)
    month = month_state(account, coverage_month)
    duplicate_of = None
    if e.trace_number is not None and coverage_month is not None:
        # the same remittance line twice: same trace, month and coverage (one line per policy is not a copy)
        duplicate_of = next(
            (p.payment_id for p in month.payments
             if p.trace_number == e.trace_number and p.status != PAYMENT_REVERSED
             and (p.plan, p.coverage_line) == (e.plan, e.coverage_line)),
            None,
        )
    if e.advice_only:
        status, duplicate_of = PAYMENT_ADVISED, None  # no money yet: paid when its remittance is funded
    else:
        status = PAYMENT_DUPLICATE if duplicate_of is not None else placement(account, month, plan)
    month.payments.append(PaymentLine(
        payment_id=e.payment_id, amount_cents=e.amount_cents, payer_id=e.payer_id, method=e.method,
        trace_number=e.trace_number, remittance_id=e.remittance_id, status=status, event_id=e.event_id,
        duplicate_of=duplicate_of, tax_treatment=e.tax_treatment, pay_frequency=e.pay_frequency,
        plan=e.plan, coverage_line=e.coverage_line,
    ))
    account.payment_months[e.payment_id] = key
    if status in UNAPPLIED_STATUSES:
        out.unapplied(e.payer_id, e.amount_cents)
    out.touch(key)
    return out


def _member_direct(account: AccountState, e: PaymentReceived) -> bool:
    """A payment the member made directly (not a payroll or agency remittance)."""
    return e.method in ("direct", "card") or e.payer_id == account.account_id


def oldest_balance_due(account: AccountState) -> date | None:
    """The account's oldest coverage month with a balance due, if any."""
    due = [m.month for m in account.months.values() if m.month is not None and m.balance_cents > 0]
    return min(due, default=None)


def on_reversal(account: AccountState, part: PartitionState, e: PaymentReversed, plan: PlanSettings) -> Outcome:
    key, line = payment_line(account, e.payment_id)
    if line.status == PAYMENT_REVERSED:
        raise Rejected(f"payment {e.payment_id} was already reversed by {line.reversal_event_id}", field="payment_id")
    out = Outcome()
    if line.status in UNAPPLIED_STATUSES:
        out.unapplied(line.payer_id, -line.amount_cents)
    line.status = PAYMENT_REVERSED
    line.reversal_event_id = e.event_id
    out.touch(key)
    return out


def on_cash_applied(account: AccountState, part: PartitionState, e: CashApplied, plan: PlanSettings) -> Outcome:
    """Release held cash from this account and derive the payment that posts it where it belongs;
    checks everything before changing anything."""
    if e.application_id in account.application_ids:
        raise Rejected(f"cash application {e.application_id} was already folded under another event id",
                       field="application_id")
    key, line = payment_line(account, e.payment_id)
    if line.status not in UNAPPLIED_STATUSES:
        raise Rejected(f"payment {e.payment_id} is {line.status}, not unapplied cash", field="payment_id")
    if e.amount_cents != line.amount_cents:
        raise Rejected(f"unapplied payment {e.payment_id} of {cents(line.amount_cents)} is applied whole, not"
                       f" {cents(e.amount_cents)}", field="amount_cents")
    target = f"{e.to_account_id}/{e.to_coverage_month:%Y-%m}"
    if e.to_account_id == account.account_id and key == month_key(e.to_coverage_month):
        raise Rejected(f"payment {e.payment_id} is already on {target}", field="to_coverage_month")
    out = Outcome()
    line.status = PAYMENT_MOVED
    line.moved_to = target
    line.reversal_event_id = e.event_id
    out.unapplied(line.payer_id, -line.amount_cents)
    account.application_ids.append(e.application_id)
    out.derived.append(PaymentReceived(
        event_id=f"{e.event_id}:payment", account_id=e.to_account_id, effective_on=e.effective_on,
        occurred_at=e.occurred_at, source=LEDGER_SOURCE, causation_id=e.event_id,
        payment_id=e.application_id, coverage_month=e.to_coverage_month, amount_cents=line.amount_cents,
        method=line.method, payer_id=line.payer_id, remittance_id=line.remittance_id,  # type: ignore[arg-type]
        tax_treatment=line.tax_treatment, pay_frequency=line.pay_frequency,  # type: ignore[arg-type]
    ))
    out.touch(key)
    return out


# ---------------------------------------------------------------------------------------------
# Findings


def pay_dates_in(calendar: PayCalendar, month: date) -> int:
    """How many pay dates the agency's calendar has in the month (two every month semi-monthly; two or
    three biweekly; four or five weekly)."""
    if calendar.frequency == "monthly":
        return 1
    if calendar.frequency == "semi_monthly":
        return 2
    step = 7 if calendar.frequency == "weekly" else 14
    first, last = month, last_day(month)
    offset = (first - calendar.first_pay_date).days % step
    day = first + timedelta(days=(step - offset) % step)
    count = 0
    while day <= last:
        count += 1
        day += timedelta(days=step)
    return count


def owed_by_deductions(applied: list[PaymentLine], net_billed: int, plan: PlanSettings, month: date) -> int:
    """What the month's payments should add up to. Payroll deductions of one pay frequency owe, each,
    (12 / pay periods a year) of the monthly premium, rounded half up to the cent: a month with three
    biweekly deductions owes 3 x 12/26 of it, one with two owes 2 x 12/26. With the payer's pay calendar
    known, the month owes one deduction per pay date in it, however many arrived: a month with one
    deduction where two were due is short."""
    frequencies = {p.pay_frequency for p in applied}
    if plan.payroll_allocation != "per_deduction" or len(frequencies) != 1:
        return net_billed
    calendar = plan.pay_calendars.get(applied[-1].payer_id) if applied[-1].method == "payroll" else None
    frequency = next(iter(frequencies)) or (calendar.frequency if calendar is not None else "monthly")
    periods = PAY_PERIODS_A_YEAR.get(frequency)
    if periods is None:
        return net_billed
    per_deduction = (net_billed * 12 * 2 + periods) // (2 * periods)
    expected = len(applied)
    if calendar is not None and calendar.frequency == frequency:
        expected = pay_dates_in(calendar, month)
    return per_deduction * expected


def short_run(v: MonthView) -> str:
    """The action's suffix when the plan cancels after N consecutive months short and this is the Nth."""
    limit = v.plan.cancel_after_short_months
    if limit is None or v.m is None:
        return ""
    run, m = 1, v.m
    while run < limit:
        m = add_months(m, -1)
        key = month_key(m)
        if f"underpaid|{key}" not in v.account.open and f"missing_payment|{key}" not in v.account.open:
            return ""
        run += 1
    return (f"; cancel the coverage for non-payment: {limit} consecutive months short"
            " (plan setting cancel_after_short_months)")


def find_payment_gap(v: MonthView) -> list[Finding]:
    """Paid against owed: ``cobra_shortfall``, ``underpaid``, ``refund_due`` or ``overpaid``."""
    m, month, plan = v.m, v.month, v.plan
    if m is None or not v.applied or not month.bills:
        return []
    paid, net_billed, applied = v.paid, v.net_billed, v.applied
    owed = owed_by_deductions(applied, net_billed, plan, m)
    refunded = counted_refunds(v, owed)
    gap = owed - (paid - refunded)
    payer = applied[-1].payer_id
    causes = tuple(b.event_id for b in month.bills) + tuple(p.event_id for p in applied)
    who = "member" if applied[-1].method in ("direct", "card") else "agency_coordinator"
    if v.cobra is not None and 0 < gap <= cobra.insignificant_shortfall_cents(net_billed, plan):
        return [Finding(
            kind="cobra_shortfall", key=f"cobra_shortfall|{v.key}", month=m, payer_id=payer,
            expected_cents=net_billed, actual_cents=paid, cause_event_ids=causes,
            explanation=f"COBRA payment {cents(paid)} of {cents(net_billed)} for {m:%Y-%m} is {cents(gap)}"
            f" short, within the lesser of {cents(plan.cobra_shortfall_max_cents)} and"
            f" {plan.cobra_shortfall_max_percent}%: treated as paid",
            action=f"send the member a notice of the {cents(gap)} balance with a reasonable time to pay",
            actor="member",
        )]
    if gap > plan.tolerance_cents:
        return [Finding(
            kind="underpaid", key=f"underpaid|{v.key}", month=m, payer_id=payer,
            expected_cents=owed, actual_cents=paid - refunded, cause_event_ids=causes,
            explanation=f"paid {cents(paid)}" + (f" less {cents(refunded)} refunded" if refunded else "")
            + f" of {cents(owed)} owed for {m:%Y-%m}; {cents(gap)} short",
            action="collect the shortfall; check for a tier or plan change payroll did not follow" + short_run(v),
            actor=who,
        )]
    if -gap > plan.tolerance_cents and closed_from(v.account, m):
        return [Finding(
            kind="refund_due", key=f"refund_due|{v.key}", month=m, payer_id=payer,
            expected_cents=net_billed, actual_cents=paid - refunded, cause_event_ids=causes,
            explanation=f"{cents(-gap)} paid for {m:%Y-%m} is not owed and the coverage has ended:"
            " it cannot pay a later premium",
            action=f"refund {cents(-gap)} to {payer}", actor="accounts_staff",
        )]
    if -gap > plan.tolerance_cents:
        return [Finding(
            kind="overpaid", key=f"overpaid|{v.key}", month=m, payer_id=payer,
            expected_cents=owed, actual_cents=paid - refunded, cause_event_ids=causes,
            explanation=f"paid {cents(paid)} against {cents(owed)} owed for {m:%Y-%m}; {cents(-gap)} over",
            action="refund or credit the excess; check payroll deductions", actor=who,
        )]
    return []


def counted_refunds(v: MonthView, owed: int) -> int:
    """The month's refunds as the payment gap counts them: all of them, except that refunds paid from
    money later reversed count only up to the credit still there (the rest is ``refund_recovery``)."""
    refunded = v.month.refunded_cents
    if refunded and any(p.status == PAYMENT_REVERSED for p in v.month.payments):
        return min(refunded, max(0, v.paid - owed))
    return refunded


def find_refund_recovery(v: MonthView) -> list[Finding]:
    """A refund paid out of money that was then reversed: the part of it no credit covers any more is
    owed back by the payee (or billed), not lost between the discrepancies."""
    m, month = v.m, v.month
    refunded = month.refunded_cents
    reversed_ = [p for p in month.payments if p.status == PAYMENT_REVERSED]
    if m is None or not refunded or not reversed_:
        return []
    owed = owed_by_deductions(v.applied, v.net_billed, v.plan, m) if v.applied else v.net_billed
    credit = max(0, v.paid - owed)
    over = refunded - credit
    if over <= 0:
        return []
    refunds = [r for r in month.refunds if r.returned_by is None]
    return [Finding(
        kind="refund_recovery", key=f"refund_recovery|{v.key}", month=m, payer_id=refunds[0].payee_id,
        expected_cents=credit, actual_cents=refunded,
        cause_event_ids=(*(r.event_id for r in refunds), *(p.reversal_event_id or p.event_id for p in reversed_)),
        explanation=f"{cents(refunded)} refunded for {m:%Y-%m} ({', '.join(r.refund_id for r in refunds)}), but"
        f" payment {', '.join(p.payment_id for p in reversed_)} that funded it was reversed: only"
        f" {cents(credit)} of credit is left, so {cents(over)} was paid out of money the ledger no longer has",
        action=f"recover {cents(over)} from {refunds[0].payee_id}, or bill it for {m:%Y-%m}", actor="accounts_staff",
    )]


def find_held_cash(v: MonthView) -> list[Finding]:
    """Each held line is ``unmatched_payment``, each duplicate ``duplicate_payment``."""
    m, found = v.m, []
    for p in v.month.payments:
        if p.status == PAYMENT_HELD:
            what = "names no coverage month" if m is None else f"is for {m:%Y-%m}, which was never billed"
            found.append(Finding(
                kind="unmatched_payment", key=f"unmatched_payment|{v.key}|{p.payment_id}", month=m,
                payer_id=p.payer_id, expected_cents=0, actual_cents=p.amount_cents, cause_event_ids=(p.event_id,),
                explanation=f"payment {p.payment_id} of {cents(p.amount_cents)} from {p.payer_id} {what};"
                " held as unapplied cash",
                action="research the payment and apply or refund it", actor="accounts_staff",
            ))
        elif p.status == PAYMENT_DUPLICATE:
            found.append(Finding(
                kind="duplicate_payment", key=f"duplicate_payment|{v.key}|{p.payment_id}", month=m,
                payer_id=p.payer_id, expected_cents=0, actual_cents=p.amount_cents, cause_event_ids=(p.event_id,),
                explanation=f"payment {p.payment_id} repeats trace {p.trace_number} of payment"
                f" {p.duplicate_of} for {m:%Y-%m}" if m else f"payment {p.payment_id} repeats a trace",
                action="return the duplicate or apply it as a credit", actor="accounts_staff",
            ))
    return found


def find_paid_after_termination(v: MonthView) -> list[Finding]:
    m = v.m
    after = [p for p in v.month.payments if p.status == PAYMENT_AFTER_TERM]
    if not after or m is None:
        return []
    amount = sum(p.amount_cents for p in after)
    ended = terminated_before(v.account, m)
    return [Finding(
        kind="paid_after_termination", key=f"paid_after_termination|{v.key}", month=m,
        payer_id=after[0].payer_id, expected_cents=0, actual_cents=amount,
        cause_event_ids=tuple(p.event_id for p in after) + ended_by(ended),
        explanation=f"{cents(amount)} paid for {m:%Y-%m}, after coverage ended" + (f" on {ended.end}" if ended else ""),
        action=f"refund {cents(amount)} to {after[0].payer_id}", actor="accounts_staff",
    )]


def payment_deadline(v: MonthView) -> date | None:
    """The last day a month's premium is timely: its due date plus the grace period, or the COBRA
    deadline for a month priced as COBRA continuation."""
    due = v.month.due_on
    if due is None or v.m is None:
        return None
    if v.cobra is None:
        return due + timedelta(days=v.plan.grace_days)
    return cobra.payment_deadline(due, v.plan, v.cobra)


def find_missing_payment(v: MonthView) -> list[Finding]:
    """Billed, nothing paid, and the business date is past the deadline."""
    m, month, plan, part = v.m, v.month, v.plan, v.part
    deadline = payment_deadline(v)
    if (m is None or deadline is None or part.business_date is None or v.paid != 0
            or v.net_billed <= plan.tolerance_cents or part.business_date <= deadline):
        return []
    day = (part.business_date_event_id,) if part.business_date_event_id else ()
    bills = tuple(b.event_id for b in month.bills)
    if v.cobra is not None:
        return [Finding(
            kind="missing_payment", key=f"missing_payment|{v.key}", month=m, payer_id=month.bills[0].agency_id,
            expected_cents=v.net_billed, actual_cents=0, cause_event_ids=(*bills, v.cobra.event_id, *day),
            explanation=f"COBRA premium {cents(v.net_billed)} for {m:%Y-%m} was not paid by {deadline}"
            f" (due {month.due_on}; elected {v.cobra.elected_on})",
            action="terminate COBRA continuation coverage for non-payment, effective the end of the last paid month",
            actor="accounts_staff",
        )]
    agency = month.bills[0].agency_id
    return [Finding(
        kind="missing_payment", key=f"missing_payment|{v.key}", month=m, payer_id=agency,
        expected_cents=v.net_billed, actual_cents=0, cause_event_ids=bills + day,
        explanation=f"{cents(v.net_billed)} billed for {m:%Y-%m} was due {month.due_on} and is unpaid"
        f" {plan.grace_days} days later ({part.business_date})",
        action="collect or start delinquency" + short_run(v), actor="agency_coordinator" if agency else "member",
    )]
