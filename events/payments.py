"""Payments: what payers pay (payroll lines, remittances, X12 820), what is reversed or refunded,
and held cash applied where it belongs."""

from __future__ import annotations

from datetime import date
from typing import Literal

import msgspec

from events.base import Cents, Event
from events.enrollment import CoverageLine

# "none": no money moves with this remittance (820 BPR04 NON, non-payment data): remittance advice.
PaymentMethod = Literal["payroll", "ach", "eft", "check", "direct", "card", "none"]
TaxTreatment = Literal["pre_tax", "post_tax"]
PayFrequency = Literal["monthly", "semi_monthly", "biweekly", "weekly"]


class RemittanceAdjustment(msgspec.Struct, frozen=True, kw_only=True):
    """An adjustment (X12 820 ADX): ADX01 amount (signed cents) and ADX02 reason code.

    On a remittance line (2320A/2320B, for the current payment) it explains RMR04 against RMR05. On the
    remittance itself (2200A organization level, 2200B individual level, for a previous payment) it
    is part of BPR02 but of no line; ``account_id`` then names the member account of a 2200B
    adjustment (None at organization level and on a line).
    """

    amount_cents: Cents
    reason: str
    account_id: str | None = None


class PaymentReceived(Event, frozen=True, kw_only=True, tag="payment_received"):
    payment_id: str
    coverage_month: date | None = None
    # Positive: money paid for the month. Negative: a take-back: the payer recovers money paid earlier
    # for this month (an 820 RMR04 below zero).
    amount_cents: Cents
    method: PaymentMethod
    payer_id: str
    remittance_id: str | None = None
    trace_number: str | None = None
    # Section 125: how payroll took the deduction (through the cafeteria plan or after tax), if it says.
    tax_treatment: TaxTreatment | None = None
    # A payroll deduction's pay frequency: a biweekly deduction is 12/26 of a monthly premium.
    pay_frequency: PayFrequency | None = None
    # From a remittance line: what the payer says was billed (RMR05) and its adjustments (ADX); then
    # amount_cents = billed_cents + the adjustments, which ingest checks. A line whose coverage period
    # spans several months is one event per month, each of these amounts split exactly (remainder cents
    # to the earliest months, so per month billed + adjustments may differ from amount by a cent).
    billed_cents: Cents | None = None
    adjustments: tuple[RemittanceAdjustment, ...] = ()
    # Remittance advice: the money of this line does not move with it (its remittance is advice only,
    # see RemittanceReceived.advice_only). The line is matched against the payment that moves the
    # money (same trace_number), never posted as cash on its own.
    advice_only: bool = False
    # The coverage the line pays, when the sender names it (820 RMR01 a policy number qualifier, RMR02
    # the policy): ``plan`` the policy or plan identifier, ``coverage_line`` when the qualifier says
    # the line (AZ health insurance policy, B7 life insurance policy). None: the line does not say.
    plan: str | None = None
    coverage_line: CoverageLine | None = None


class PaymentReversed(Event, frozen=True, kw_only=True, tag="payment_reversed"):
    payment_id: str
    reason: str


class RemittanceReceived(Event, frozen=True, kw_only=True, tag="remittance_received"):
    """One remittance (an X12 820 BPR/TRN) on the payer's account ``payer:<payer_id>``.

    ``total_cents`` is what the payer says it paid (BPR02); ``lines_total_cents`` the sum of its
    remittance lines (RMR04). They differ when the payer's payroll made an error; the ledger records
    the remittance and opens ``remittance_total_mismatch``. The lines are PaymentReceived events.
    A well-formed remittance balances: total_cents = lines_total_cents + the sum of ``adjustments``
    (remittance-level ADX, adjustments for previous payments that belong to no line).

    ``advice_only``: no money moves with this remittance (BPR01 I remittance information only, U split
    payment and remittance, P prenotification of future transfers, or BPR04 NON non-payment data). Its
    lines are advice: the ledger matches them against the payment that moves the money by
    ``trace_number`` and posts no cash from them.
    """

    remittance_id: str
    payer_id: str
    payee_id: str | None = None
    method: PaymentMethod
    payment_date: date
    trace_number: str
    total_cents: Cents
    lines_total_cents: Cents
    line_count: int
    advice_only: bool = False
    adjustments: tuple[RemittanceAdjustment, ...] = ()


class RemittanceLinePosted(Event, frozen=True, kw_only=True, tag="remittance_line_posted"):
    """Posted by the ledger itself (through the outbox, on the payments topic): a remittance line was
    applied on its member's account. Keyed by the payer's account, where the remittance is reconciled
    against the lines the ledger actually posted, not the lines the sender says it sent."""

    remittance_id: str
    trace_number: str | None = None
    payer_id: str
    line_account_id: str
    payment_id: str
    coverage_month: date | None = None
    amount_cents: Cents
    advice_only: bool = False


class RemittanceFunded(Event, frozen=True, kw_only=True, tag="remittance_funded"):
    """Posted by the ledger itself: the money of a remittance advice arrived (a payment with its trace
    on the payer's account), so the advice lines on this member's account are paid now."""

    remittance_id: str
    trace_number: str
    payment_ids: tuple[str, ...]
    funding_payment_id: str


class RefundIssued(Event, frozen=True, kw_only=True, tag="refund_issued"):
    """Money paid back to a payer: either held cash returned (``payment_id``: a payment that was never
    applied, such as one after termination or a duplicate), or a month's credit (``coverage_month``)."""

    refund_id: str
    payee_id: str
    amount_cents: Cents
    method: PaymentMethod
    reason: str
    payment_id: str | None = None
    coverage_month: date | None = None


class RefundReturned(Event, frozen=True, kw_only=True, tag="refund_returned"):
    """A refund that came back: a returned or voided check, a rejected ACH, or money the payee sent
    back. Its amount is on the account again: a month's credit reappears, returned held cash is held
    again."""

    refund_id: str
    reason: str


class CashApplied(Event, frozen=True, kw_only=True, tag="cash_applied"):
    """Unapplied cash on this account applied, whole, to a member-month of this or another account.

    ``payment_id`` is a payment the ledger holds unapplied (unmatched, after termination, or a
    duplicate). The ledger releases it here and posts it on ``to_account_id`` as a
    ``payment_received`` (event id ``<event_id>:payment``, payment id ``application_id``, caused by
    this event), where it is matched like any payment.
    """

    application_id: str
    payment_id: str
    to_account_id: str
    to_coverage_month: date
    amount_cents: Cents
    reason: str
