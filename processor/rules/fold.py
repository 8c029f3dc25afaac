"""THE fold: one input event into the state of its partition's accounts. Live processing, replay,
rebuild, the scenario runner and the tests all call ``fold_event``; nothing else dispatches events.

Event handling is a table from event type to handler. An account handler changes one account and
names the months it touched; a broadcast handler (rates, business days, billing cycles) changes the
partition's reference data and names, per account it reaches, the months touched. The fold then
reconciles every touched month. Handlers raise ``Rejected`` before changing anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from events.types import (
    WORKFLOW_TYPES,
    AdjustmentPosted,
    BillingCycleClosed,
    CashApplied,
    DayClosed,
    EnrollmentChanged,
    Event,
    FsaClaimSubmitted,
    FsaContributionReceived,
    FsaElectionMade,
    InputEvent,
    NoticeIssued,
    PaymentReceived,
    PaymentReversed,
    PremiumBilled,
    RatePublished,
    RefundIssued,
    RefundReturned,
    RemittanceFunded,
    RemittanceLinePosted,
    RemittanceReceived,
)
from processor.rules import billing, days, fsa, notices, payments, pricing, refunds, remittances, retro, workflow
from processor.rules.base import Outcome
from processor.rules.enrollment import on_enrollment
from processor.rules.reconcile import reconcile
from processor.settings import PlanSettings
from processor.state import AccountState, PartitionState

AccountHandler = Callable[[AccountState, PartitionState, Any, PlanSettings], Outcome]
Reached = list[tuple[AccountState, Outcome]]
BroadcastHandler = Callable[[PartitionState, Any, PlanSettings, Iterable[AccountState]], Reached]


def on_rate(part: PartitionState, e: RatePublished, plan: PlanSettings, accounts: Iterable[AccountState]) -> Reached:
    """Add a rate and recompute the billed months it reaches back into: a month whose premium it moves
    records the change (a retroactive_change; the wrong_rate it explains is superseded)."""
    affected = [a for a in accounts if retro.rate_reaches(a, e)]
    before = {a.account_id: retro.billed_premiums(a, part, plan, lambda m: pricing.rate_covers(e, m))
              for a in affected}
    pricing.add_rate(part, e)
    reached: Reached = []
    for account in affected:
        moved = retro.note_changes(
            account, part, plan, before[account.account_id], event_id=e.event_id, change_date=e.month_from,
            days_back=(e.occurred_at.date() - e.month_from).days, cause="rate",
        )
        if moved:
            out = Outcome()
            for key in moved:
                out.touch(key)
            reached.append((account, out))
    return reached


def on_day(part: PartitionState, e: DayClosed, plan: PlanSettings, accounts: Iterable[AccountState]) -> Reached:
    days.close_day(part, e)
    return [(a, days.day_touches(a, part, e, plan)) for a in accounts if days.day_may_change(a, e.business_date, plan)]


def on_cycle(part: PartitionState, e: BillingCycleClosed, plan: PlanSettings,
             accounts: Iterable[AccountState]) -> Reached:
    billing.close_cycle(part, e)
    reached = [(a, billing.cycle_touches(a, part, e, plan)) for a in accounts]
    return [(a, out) for a, out in reached if out.touched]


ACCOUNT_HANDLERS: dict[type[Event], AccountHandler] = {
    EnrollmentChanged: on_enrollment,
    PremiumBilled: billing.on_bill,
    AdjustmentPosted: billing.on_adjustment,
    PaymentReceived: remittances.on_payment_received,
    PaymentReversed: payments.on_reversal,
    CashApplied: payments.on_cash_applied,
    RemittanceReceived: remittances.on_remittance,
    RemittanceLinePosted: remittances.on_line_posted,
    RemittanceFunded: remittances.on_funded,
    RefundIssued: refunds.on_refund,
    RefundReturned: refunds.on_refund_returned,
    FsaElectionMade: fsa.on_fsa_event,
    FsaContributionReceived: fsa.on_fsa_event,
    FsaClaimSubmitted: fsa.on_fsa_event,
    NoticeIssued: notices.on_notice,
    **{t: workflow.apply_workflow_event for t in WORKFLOW_TYPES},
}
BROADCAST_HANDLERS: dict[type[Event], BroadcastHandler] = {
    RatePublished: on_rate,
    DayClosed: on_day,
    BillingCycleClosed: on_cycle,
}


def fold_event(
    event: InputEvent, part: PartitionState, plan: PlanSettings,
    account_of: Callable[[str], AccountState], reachable: Callable[[], Iterable[AccountState]],
) -> Reached:
    """Fold one event; returns each account it changed with what changed.

    ``account_of(id)`` gives the account an account event is for (created empty when new);
    ``reachable()`` every account of the partition a broadcast event may change (at least those the
    store's candidate queries select: see ``LedgerStore.due_accounts`` and friends).
    """
    handler = ACCOUNT_HANDLERS.get(type(event))
    if handler is not None:
        account = account_of(event.account_id)
        assert account.account_id == event.account_id, "event routed to the wrong account"
        out = handler(account, part, event, plan)
        for key in out.touched:
            reconcile(account, part, plan, key, event, out)
        return [(account, out)]
    broadcast = BROADCAST_HANDLERS.get(type(event))
    if broadcast is None:
        raise AssertionError(f"no handler for {type(event).__name__}: add it to processor/rules/fold.py")
    reached = broadcast(part, event, plan, reachable())
    for account, out in reached:
        for key in out.touched:
            reconcile(account, part, plan, key, event, out)
    return reached
