"""Reconcile one month: project what it should cost, run every finder, and settle the difference with
what is open there (opened, amount changed, resolved, superseded). The one detection step. Pure."""

from __future__ import annotations

from collections.abc import Callable

from events.types import InputEvent
from processor.rules import billing, eligibility, payments, retro, s125
from processor.rules.base import Finding, MonthView, Outcome
from processor.rules.coverage import priced_segments
from processor.rules.lifecycle import screen_findings, settle
from processor.rules.pricing import premium_shares
from processor.settings import PlanSettings
from processor.state import AccountState, PartitionState, month_of_key

Finder = Callable[[MonthView], list[Finding]]

# Every discrepancy a member-month can show, in the order its findings are reported.
MONTH_FINDERS: tuple[Finder, ...] = (
    billing.find_bill_errors,
    payments.find_payment_gap,
    payments.find_refund_recovery,
    payments.find_held_cash,
    s125.find_tax_treatment,
    payments.find_paid_after_termination,
    retro.find_retroactive_change,
    billing.find_enrolled_not_billed,
    payments.find_missing_payment,
    eligibility.find_eligibility,
)


def detect(v: MonthView) -> dict[str, Finding]:
    """Every discrepancy the month shows now, by key. Same state in, same findings out."""
    found: dict[str, Finding] = {}
    for finder in MONTH_FINDERS:
        for f in finder(v):
            found[f.key] = f
    if f"retroactive_change|{v.key}" in found:
        for explained in [k for k, f in found.items() if f.kind in retro.EXPLAINED_BY_RETRO]:
            del found[explained]
    return found


def project(account: AccountState, part: PartitionState, plan: PlanSettings, key: str) -> MonthView:
    """The month's expected premium, its shares and its tax split, from the coverage and rates now."""
    month = account.months[key]
    priced = []
    if month.month is not None:
        priced = priced_segments(account, month.month, plan)
        month.expected_cents, month.employee_share_cents, month.employer_share_cents = premium_shares(
            priced, part, month.month, plan
        )
        month.post_tax_cents, month.imputed_income_cents = s125.tax_split(account, part, month.month, priced, plan)
    return MonthView.of(account, part, plan, key, priced)


def reconcile(
    account: AccountState, part: PartitionState, plan: PlanSettings, key: str, trigger: InputEvent, out: Outcome,
) -> None:
    """Re-project the month, detect, and settle its discrepancies with what the trigger changed."""
    v = project(account, part, plan, key)
    out.dirty_months.add(key)
    account.month_changed(key)
    found = detect(v)
    if account.closed:  # a finding a person dismissed stays closed while it shows the same amounts
        screen_findings(account, key, found)
    if f"retroactive_change|{key}" not in found:
        retro.settled(v.month)
    settle(account, trigger, out, found, lambda dkey: month_of_key(dkey) == key,
           retro.retroactive_for(trigger, v.month, key), row=key)
