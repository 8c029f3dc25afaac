"""Business days: the time-driven rules, decided when a ``day_closed`` is folded, never by the clock.

A new business day can turn a billed, unpaid month into a ``missing_payment`` once its deadline has
passed, and can end the run-out of a flexible spending account's plan year. ``months_to_check`` is the
exact set of months a day re-evaluates, whether the account is cached or loaded from the store
(``LedgerStore.due_accounts`` selects the same), so a restart cannot change the books. Pure.
"""

from __future__ import annotations

from datetime import date, timedelta

from events.types import DayClosed
from processor.rules import remittances
from processor.rules.base import Outcome, Rejected
from processor.rules.fsa import claim_deadline, fsa_may_close, settle
from processor.settings import PlanSettings
from processor.state import AccountState, PartitionState


def close_day(part: PartitionState, e: DayClosed) -> None:
    """The partition's business date moves forward, never back."""
    if part.business_date is not None and e.business_date < part.business_date:
        raise Rejected(f"business_date {e.business_date} is before the closed day {part.business_date}",
                       field="business_date")
    part.business_date = e.business_date
    part.business_date_event_id = e.event_id


def candidate_cutoff(business_date: date, plan: PlanSettings) -> date:
    """Months due before this date may be missing on ``business_date`` (the detector decides)."""
    return business_date - timedelta(days=min(plan.grace_days, plan.cobra_grace_days))


def months_to_check(account: AccountState, business_date: date, plan: PlanSettings) -> list[str]:
    """Billed, unpaid months past the shortest grace period with no missing payment open yet."""
    cutoff = candidate_cutoff(business_date, plan)
    keys = []
    months = account.months
    for key in sorted(account.unpaid_months):  # billed, nothing applied: not the whole history
        month = months[key]
        due = month.due_on
        if (
            due is not None and due < cutoff and month.billed_cents + month.adjusted_cents > 0
            and f"missing_payment|{key}" not in account.open
        ):
            keys.append(key)
    return keys


def day_may_change(account: AccountState, business_date: date, plan: PlanSettings) -> bool:
    """Cheap filter: a month may turn missing, an FSA plan year's run-out ends, or a payer's remittance
    is due to be judged."""
    if months_to_check(account, business_date, plan):
        return True
    if account.remittances and remittances.has_due(account, business_date, plan):
        return True
    return account.fsa is not None and fsa_may_close(account.fsa, business_date, plan.fsa)


def next_day_may_change(account: AccountState, plan: PlanSettings) -> date | None:
    """The first business date on which ``day_may_change`` holds for the account as it stands (None: on
    no date). Each of its tests is "the date is past a threshold", so ``day_may_change(account, d, plan)``
    is true exactly when ``d`` is on or after this date: until the account changes, a replay may skip
    every day before it for this account, and must fold every day from it on."""
    first: date | None = None

    def after(day: date, days: int) -> None:
        # ``d > day + days``: the earliest such d; none past date.max
        nonlocal first
        if day <= date.max - timedelta(days=days + 1):
            at = day + timedelta(days=days + 1)
            first = at if first is None or at < first else first

    grace = min(plan.grace_days, plan.cobra_grace_days)  # as candidate_cutoff: due < d - grace
    months = account.months
    for key in account.unpaid_months:  # the earliest date does not depend on the order
        month = months[key]
        due = month.due_on
        if (due is not None and month.billed_cents + month.adjusted_cents > 0
                and f"missing_payment|{key}" not in account.open):
            after(due, grace)
    books = account.remittances
    for rid in account.waiting_books:  # as remittances.has_due: d > the lines' last day
        lines_due = remittances._due(books[rid], plan)
        if lines_due is not None:
            after(lines_due, 0)
    if account.fsa is not None:  # as fsa_may_close: d > the plan year's claim deadline
        for y in account.fsa.years.values():
            if not y.closed:
                after(claim_deadline(y.plan_year, y.account_type, plan.fsa), 0)
    return first


def day_touches(account: AccountState, part: PartitionState, e: DayClosed, plan: PlanSettings) -> Outcome:
    """The months the day re-evaluates, and the FSA plan years whose run-out it ends."""
    out = Outcome()
    for key in months_to_check(account, e.business_date, plan):
        out.touch(key)
    if account.fsa is not None and fsa_may_close(account.fsa, e.business_date, plan.fsa):
        settle(account.fsa, e.business_date, plan.fsa)
        out.fsa_changed = True
    if account.remittances and remittances.has_due(account, e.business_date, plan):
        remittances.judge_due(account, part, e, plan, out)
    return out
