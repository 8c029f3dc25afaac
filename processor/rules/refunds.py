"""Refunds: money paid back to a payer (held cash returned whole, or a month's credit), and refunds
that come back (a returned check, a rejected ACH). Pure."""

from __future__ import annotations

from events.money import format_cents as cents
from events.types import RefundIssued, RefundReturned
from processor.rules.base import Outcome, Rejected
from processor.rules.payments import payment_line, placement
from processor.settings import PlanSettings
from processor.state import (
    PAYMENT_APPLIED,
    PAYMENT_DUPLICATE,
    PAYMENT_REFUNDED,
    UNAPPLIED_STATUSES,
    AccountState,
    PartitionState,
    RefundLine,
    month_key,
)


def on_refund(account: AccountState, part: PartitionState, e: RefundIssued, plan: PlanSettings) -> Outcome:
    """Return held cash, or pay back a month's credit; checks everything before changing anything."""
    if e.refund_id in account.refund_ids:
        raise Rejected(f"refund {e.refund_id} was already issued under another event id", field="refund_id")
    if e.amount_cents <= 0:
        raise Rejected("a refund amount must be positive", field="amount_cents")
    out = Outcome()
    if e.payment_id is not None:
        key, line = payment_line(account, e.payment_id)
        if line.status not in UNAPPLIED_STATUSES:
            raise Rejected(f"payment {e.payment_id} is {line.status}, not held cash: refund the month's credit"
                           " (coverage_month) instead", field="payment_id")
        if e.amount_cents != line.amount_cents:
            raise Rejected(f"held payment {e.payment_id} of {cents(line.amount_cents)} is returned whole, not"
                           f" {cents(e.amount_cents)}", field="amount_cents")
        line.refunded_from = line.status
        line.status = PAYMENT_REFUNDED
        line.refund_id = e.refund_id
        out.unapplied(line.payer_id, -line.amount_cents)
    else:
        if e.coverage_month is None:
            raise Rejected("name the held payment returned (payment_id) or the month whose credit is refunded"
                           " (coverage_month)", field="coverage_month")
        key = month_key(e.coverage_month)
        month = account.months.get(key)
        credit = -month.balance_cents if month is not None else 0
        if month is None or e.amount_cents > credit:
            raise Rejected(f"refund of {cents(e.amount_cents)} exceeds the credit of {cents(max(credit, 0))} on"
                           f" {e.coverage_month:%Y-%m}", field="amount_cents")
        month.refunds.append(RefundLine(refund_id=e.refund_id, payee_id=e.payee_id, amount_cents=e.amount_cents,
                                        event_id=e.event_id))
    account.refund_ids.append(e.refund_id)
    out.touch(key)
    return out


def on_refund_returned(account: AccountState, part: PartitionState, e: RefundReturned, plan: PlanSettings) -> Outcome:
    """Undo a refund that came back: a month's credit reappears, returned held cash is held again."""
    out = Outcome()
    for key, month in account.months.items():
        for r in month.refunds:
            if r.refund_id == e.refund_id:
                if r.returned_by is not None:
                    raise Rejected(f"refund {e.refund_id} was already returned by {r.returned_by}", field="refund_id")
                r.returned_by = e.event_id
                out.touch(key)
                return out
        for p in month.payments:
            if p.refund_id == e.refund_id:
                if p.status != PAYMENT_REFUNDED:
                    raise Rejected(f"refund {e.refund_id} was already returned (payment {p.payment_id} is"
                                   f" {p.status})", field="refund_id")
                assert p.refunded_from is not None
                # placed again as if it arrived now: a bill posted meanwhile applies it
                p.status = p.refunded_from if p.refunded_from == PAYMENT_DUPLICATE else placement(account, month, plan)
                p.reversal_event_id = e.event_id
                if p.status != PAYMENT_APPLIED:
                    out.unapplied(p.payer_id, p.amount_cents)
                out.touch(key)
                return out
    raise Rejected(f"refund {e.refund_id} is unknown on account {account.account_id}", field="refund_id")
