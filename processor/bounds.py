"""Sums stay in range: what the fold or the store adds up is checked before a record is folded.

The codec bounds every single amount (``events.money.AMOUNT_CENTS_MAX``, 10^12 cents); these checks
bound what the ledger adds up from many of them: the lines of one member-month, an FSA plan year's
contributions and reimbursements, and a payer's unapplied cash (summed by the store across batches).
A record that would take one of them past ``SUM_CENTS_MAX`` is dead-lettered with the reason instead
of overflowing a bigint column and stopping the partition. Pure functions: no I/O, clock or logging.
"""

from __future__ import annotations

import re

from events.money import format_cents
from events.types import (
    AdjustmentPosted,
    FsaContributionReceived,
    InputEvent,
    PaymentReceived,
    PremiumBilled,
    RefundIssued,
)
from processor.state import AccountState, MonthState, fsa_key, month_key

# A month's, a plan year's or a payer's total (of magnitudes) stays below this: $10 trillion, 10^3 of the
# largest single amount and 10^3 below where PostgreSQL's bigint ends, so sums of such totals in
# reports still fit.
SUM_CENTS_MAX = 10**15

# A dead letter's reason and field are stored in text columns and sent as Kafka headers: bounded, and
# control characters (a NUL from a hostile record quoted in a decoder's message) shown escaped.
REASON_CHARS_MAX = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str, limit: int = REASON_CHARS_MAX) -> str:
    """``text`` with control characters escaped (``\\x00``) and cut to ``limit`` characters."""
    if _CONTROL.search(text) is not None:
        text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if len(text) > limit:
        text = text[: limit - 30] + f"... ({len(text) - limit + 30:,} more characters)"
    return text


def month_gross(month: MonthState | None) -> int:
    """Sum of the magnitudes of every amount on a member-month: bounds billed, adjusted, paid,
    unapplied, refunded and the balance at once."""
    if month is None:
        return 0
    total = 0
    for lines in (month.bills, month.adjustments, month.payments, month.refunds):  # loops: every money event asks
        for line in lines:
            total += abs(line.amount_cents)
    return total


def sum_rejection(
    account: AccountState | None, event: InputEvent, payer_total: int = 0,
) -> tuple[str, str] | None:
    """(reason, field) when folding ``event`` could take a sum past SUM_CENTS_MAX, else None.

    ``payer_total`` bounds the magnitude of the payer's unapplied cash before this event (for payments).
    """
    if isinstance(event, PremiumBilled | AdjustmentPosted | PaymentReceived | RefundIssued):
        amount = abs(event.amount_cents)
        month = event.coverage_month
        if account is not None:
            total = month_gross(account.months.get(month_key(month))) + amount
            if total >= SUM_CENTS_MAX:
                where = f"{month:%Y-%m}" if month is not None else "the payments naming no month"
                return (f"amount_cents: {format_cents(event.amount_cents)} would take the amounts of {where} on"
                        f" {event.account_id} to {format_cents(total)}, beyond the ledger's bound of"
                        f" {format_cents(SUM_CENTS_MAX)} (processor.bounds.SUM_CENTS_MAX)", "amount_cents")
        if isinstance(event, PaymentReceived) and payer_total + amount >= SUM_CENTS_MAX:
            return (f"amount_cents: {format_cents(event.amount_cents)} could take payer {event.payer_id}'s unapplied"
                    f" cash to {format_cents(payer_total + amount)}, beyond the ledger's bound of"
                    f" {format_cents(SUM_CENTS_MAX)} (processor.bounds.SUM_CENTS_MAX)", "amount_cents")
        return None
    if isinstance(event, FsaContributionReceived) and account is not None and account.fsa is not None:
        # Reimbursements never exceed what an election and its carryover (or the contributions) make
        # available, so contributions are the FSA sum to bound.
        found = account.fsa.years.get(fsa_key(event.plan_year, event.account_type))
        if found is not None and found.contributed_cents + event.amount_cents >= SUM_CENTS_MAX:
            total = found.contributed_cents + event.amount_cents
            return (f"amount_cents: {format_cents(event.amount_cents)} would take the {event.plan_year}"
                    f" {event.account_type} FSA contributions to {format_cents(total)}, beyond the ledger's bound"
                    f" of {format_cents(SUM_CENTS_MAX)} (processor.bounds.SUM_CENTS_MAX)", "amount_cents")
    return None
