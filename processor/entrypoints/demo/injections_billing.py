"""Month by month, the injected errors of billing and payers (placed by injections.py): what billing
sends for a member's month, what the payer pays, and what follows: refunds, a payment reversed after a
refund, cash under a mistyped member id applied where it belongs, a line resent, strangers' payments.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from events.types import CashApplied, Event, PaymentReceived, PaymentReversed, RefundIssued, RefundReturned
from processor.entrypoints.demo.model import add_months
from processor.entrypoints.demo.records import Member

if TYPE_CHECKING:
    from processor.entrypoints.demo.program import Builder


def billing(b: Builder, p: Member, month: date, inject: str | None, due: list[tuple[str, str, str, int]]
            ) -> list[tuple[str, str, str, int]]:
    """What billing sends for the member's month: what is due, unless an error is injected there."""
    found = (inject or "", p.account_id, month)
    if inject == "enrolled_not_billed":
        b.expect(found)  # billing missed the member; payroll follows billing and deducts nothing
        return []
    if inject == "billed_not_enrolled":
        # the termination reached enrollment but not billing, which bills last month's coverage
        assert not due, f"{p.account_id} is still covered in {month}"
        b.expect(found)
        return [(line, cov.plan, cov.tier, total) for line, cov in sorted(p.coverages.items())
                if (total := b.pricing.rates.total(cov.plan, cov.tier, month)) is not None]
    if inject == "wrong_rate":
        b.expect(found)  # billing kept last period's rate, or the wrong tier
        return [(line, plan_id, tier, amount + (b.rng.choice([-1, 1]) * b.rng.randrange(1_500, 9_000)
                                                if line == "health" else 0))
                for line, plan_id, tier, amount in due]
    return due


def payment(b: Builder, p: Member, month: date, inject: str | None, billed: int | None) -> int | None:
    """What the payer pays for the member's month (None: nothing); ``billed``: the month's bills."""
    found = (inject or "", p.account_id, month)
    rng, rules = b.rng, b.rules
    if inject == "paid_after_termination":
        b.expect(found)  # payroll kept deducting after the termination
        return sum(b.pricing.rates.total(c.plan, c.tier, month) or 0 for c in p.coverages.values())
    if billed is None:
        return None
    if inject == "missing_payment":
        b.expect(found)
        return None
    if inject == "underpaid":
        b.expect(found)
        return billed - rng.randrange(2_000, 30_000)
    if inject in ("overpaid", "refund_due"):
        pay = billed + rng.randrange(2_000, 30_000)
        overpaid = ("overpaid", p.account_id, month)
        b.expect(overpaid)
        if inject == "refund_due":
            # the coverage then ends with this month: the credit can pay no later premium, so the
            # overpayment becomes a refund due when the termination arrives (closing the overpaid)
            b.expect(overpaid, [("resolved", None)])
            b.close_on_termination[p.account_id] = overpaid
            b.expect(found, refund(b, p, month, pay - billed))
        return pay
    if inject == "refund_recovery":
        recover(b, p, month, billed, pay := billed + rng.randrange(2_000, 30_000))
        return pay
    if inject == "cobra_shortfall":
        # the COBRA member pays a little short: no more than the lesser of $50 and 10% of the premium,
        # so it counts as paid and the member gets a notice (26 CFR 54.4980B-8)
        limit = min(rules.cobra_shortfall_max_cents, billed * rules.cobra_shortfall_max_percent // 100)
        if limit > 0:  # a plan may set no allowance at all: then the member pays in full
            b.expect(found)
            return billed - rng.randint(max(1, limit // 10), limit)
    return billed


def refund(b: Builder, p: Member, month: date, credit: int) -> list[tuple[str, str | None]]:
    """The accounts staff act on the n-th refund due, in the month after the overpaid one (when the
    termination that makes it a refund has arrived): one in three is refunded and the check comes back
    (the credit is on the month again: refund_due opens anew), one in three is refunded, one in three is
    left open. Returns (final status, closing event) of each refund_due row of the month."""
    n = b.refunds_seen
    b.refunds_seen += 1
    if n % 3 == 2:
        return [("open", None)]
    payee = p.account_id if p.direct_pay else p.agency_id
    refund_id = f"RF{month:%Y%m}-{p.account_id}"
    issued_on = add_months(month, 1) + timedelta(days=6)
    issued = RefundIssued(
        event_id=b.eid("refund"), account_id=p.account_id, effective_on=issued_on, occurred_at=b.at(issued_on, 10),
        source="accounts-staff", refund_id=refund_id, payee_id=payee, amount_cents=credit,
        method="check" if p.direct_pay else "ach", reason="premium paid for a month after coverage ended",
        coverage_month=month,
    )
    events: list[Event] = [issued]
    if n % 3 == 0:
        returned_on = issued_on + timedelta(days=12)
        events.append(RefundReturned(
            event_id=b.eid("refund-back"), account_id=p.account_id, effective_on=returned_on,
            occurred_at=b.at(returned_on, 10), source="bank-returns", refund_id=refund_id,
            reason="R03 no account/unable to locate account" if not p.direct_pay else "check returned: moved",
        ))
    b.scheduled.setdefault(add_months(month, 1), []).extend(events)
    return [("resolved", issued.event_id), ("open", None)] if n % 3 == 0 else [("resolved", issued.event_id)]


def recover(b: Builder, p: Member, month: date, billed: int, pay: int) -> None:
    """A direct payer overpays the month; the month after, the accounts staff refund the credit
    (resolving the overpaid) and then the payment comes back NSF: the refund was paid out of money the
    ledger no longer has (refund_recovery, left open: the payee must pay it back), and the month is
    unpaid (missing_payment, once its grace period has run out). The month after that, the member
    pays the month again, which resolves the missing payment but not the refund to recover."""
    following, after = add_months(month, 1), add_months(month, 2)
    refunded_on, returned_on = following + timedelta(days=6), following + timedelta(days=12)
    issued = RefundIssued(
        event_id=b.eid("refund"), account_id=p.account_id, effective_on=refunded_on,
        occurred_at=b.at(refunded_on, 10), source="accounts-staff", refund_id=f"RF{month:%Y%m}-{p.account_id}-over",
        payee_id=p.account_id, amount_cents=pay - billed, method="check",
        reason="credit on the account: premium paid twice", coverage_month=month,
    )
    bounced = PaymentReversed(
        event_id=b.eid("nsf"), account_id=p.account_id, effective_on=returned_on, occurred_at=b.at(returned_on, 9),
        source="bank-returns", payment_id=f"P{month:%Y%m}-{p.account_id}", reason="R01 insufficient funds",
    )
    again = b.payment_line(p, month, billed, None, suffix="-again", paid_in=after)
    b.scheduled.setdefault(following, []).extend([issued, bounced])
    b.scheduled.setdefault(after, []).append(again)
    b.expect(("overpaid", p.account_id, month), [("resolved", issued.event_id)])
    b.expect(("refund_recovery", p.account_id, month))
    b.expect(("missing_payment", p.account_id, month), [("resolved", again.event_id)])


def misdirect(b: Builder, p: Member, month: date, pay: int) -> str | None:
    """The mistyped member id the payroll line goes to ("": the line names no month), if one is injected
    on the month: the member's month stays unpaid until the cash is applied to it (two months on,
    after its grace period ran out)."""
    typo = b.misdirected.get((p.account_id, month))
    if typo is None:
        return None
    applied_on = add_months(month, 2) + timedelta(days=20)
    held_on = typo or p.account_id
    application = CashApplied(
        event_id=b.eid("apply"), account_id=held_on, effective_on=applied_on,
        occurred_at=b.at(applied_on, 11), source="accounts-staff", application_id=f"CA{month:%Y%m}-{held_on}",
        payment_id=f"P{month:%Y%m}-{held_on}", to_account_id=p.account_id, to_coverage_month=month,
        amount_cents=pay, reason=f"member id {typo} keyed with a digit too many: {p.account_id}" if typo
        else f"payroll line for {p.account_id} named no coverage month: {month:%Y-%m}",
    )
    for found in (("unmatched_payment", held_on, month if typo else None), ("missing_payment", p.account_id, month)):
        b.expect(found, [("resolved", application.event_id)])
    b.scheduled.setdefault(add_months(month, 2), []).append(application)
    b.derived_payments += 1
    return typo


def after_payment(b: Builder, p: Member, month: date, inject: str | None, line: PaymentReceived) -> list[Event]:
    """What follows the member's payment line: the same line resent under a new id."""
    if inject == "tax_treatment":
        b.expect(("tax_treatment", p.account_id, month))
    if inject != "duplicate_payment":
        return []
    b.expect(("duplicate_payment", p.account_id, month))
    return [PaymentReceived(
        event_id=b.eid("pay"), account_id=p.account_id, effective_on=line.effective_on,
        occurred_at=b.at(month + timedelta(days=6), 15), source=line.source,
        payment_id=f"P{month:%Y%m}-{p.account_id}-resent", coverage_month=month, amount_cents=line.amount_cents,
        method=line.method, payer_id=line.payer_id, remittance_id=line.remittance_id,
        trace_number=line.trace_number,
    )]


def strangers(b: Builder, mi: int, month: date, traces: dict[str, str]) -> list[Event]:
    """Payments for people nobody knows: unapplied cash on the agency's account."""
    out: list[Event] = []
    if not (mi % max(1, b.months // b.per_kind) == 0 or mi == b.months - 1):
        return out
    for _ in range(max(1, b.per_kind // b.months + 1)):
        stranger = f"X{b.seed % 100:02d}{mi:02d}{b.rng.randrange(10**4):04d}{len(b.expected):05d}"
        agency = b.rng.choice(b.agencies)
        out.append(PaymentReceived(
            event_id=b.eid("pay"), account_id=stranger, effective_on=month + timedelta(days=4),
            occurred_at=b.at(month + timedelta(days=4), 14), source="bank-820",
            payment_id=f"P{month:%Y%m}-{stranger}", coverage_month=month,
            amount_cents=b.rng.randrange(5_000, 200_000), method="payroll", payer_id=agency,
            remittance_id=f"R{month:%Y%m}-{agency}", trace_number=traces[agency],
        ))
        b.expect(("unmatched_payment", stranger, month))
    return out
