"""The event language: frozen, tagged, versioned msgspec Structs. Money is integer cents."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, ClassVar, Literal, get_args

import msgspec

Cents = int

# Broadcast events (rates, business days) carry this account id: they belong to no account and
# are published once to every partition so each partition folds them in order with its accounts.
BROADCAST_ACCOUNT = "*"

# "ltc": long-term care (834 HD03 LTC).
CoverageLine = Literal["health", "dental", "vision", "life", "ltd", "std", "fsa", "dcap", "ltc"]
Relationship = Literal["self", "spouse", "child", "domestic_partner", "other"]
EnrollmentAction = Literal["add", "change", "terminate", "reinstate"]
CoverageStatus = Literal["active", "cobra", "retiree"]
# What started a COBRA continuation (42 USC 300bb-3): termination or reduced hours give 18 months (29
# with a disability extension); the secondary events give 36.
QualifyingEvent = Literal["termination", "reduced_hours", "death", "divorce", "dependent_loss", "medicare"]
# "none": no money moves with this remittance (820 BPR04 NON, non-payment data): remittance advice.
PaymentMethod = Literal["payroll", "ach", "eft", "check", "direct", "card", "none"]
TaxTreatment = Literal["pre_tax", "post_tax"]
PayFrequency = Literal["monthly", "semi_monthly", "biweekly", "weekly"]
Actor = Literal["agency_coordinator", "payroll", "member", "billing", "accounts_staff"]
FsaAccountType = Literal["health", "dependent_care"]
TaxFilingStatus = Literal["single", "married_filing_jointly", "married_filing_separately", "head_of_household"]
# "pending": nothing paid yet, the claim waits for dependent-care contributions (pending_cents).
ClaimDecision = Literal["approved", "partially_approved", "denied", "pending"]
NoticeRecipient = Literal["agency_coordinator", "member"]
NoticeChannel = Literal["mail", "email", "portal"]

# The discrepancy kinds (DOMAIN.md): used by events, rows, the CLI and the contracts. Add kinds when the
# domain needs them; never rename one.
DiscrepancyKind = Literal[
    "underpaid",
    "overpaid",
    "billed_not_enrolled",
    "enrolled_not_billed",
    "wrong_rate",
    "paid_after_termination",
    "unmatched_payment",
    "duplicate_payment",
    "missing_payment",
    "remittance_total_mismatch",
    "retroactive_change",
    "tax_treatment",
    "cobra_shortfall",
    "refund_due",
    "unknown_coverage",  # a termination, change or reinstatement for coverage the ledger never heard of
    "eligibility",  # tier or dependent status inconsistent with the covered people, or an age limit passed
    "refund_recovery",  # a refund paid out on money that was later reversed
]
DISCREPANCY_KINDS: tuple[str, ...] = get_args(DiscrepancyKind)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every event carries. ``event_id`` is the idempotency key."""

    SCHEMA_VERSION: ClassVar[int] = 1
    BROADCAST: ClassVar[bool] = False

    event_id: str
    account_id: str
    effective_on: date
    occurred_at: datetime
    source: str = "unknown"
    causation_id: str | None = None
    schema_version: int = 1


class EnrollmentChanged(Event, frozen=True, kw_only=True, tag="enrollment_changed"):
    """A coverage of one member (subscriber or dependent) on the subscriber's account."""

    member_id: str
    relationship: Relationship = "self"
    plan: str
    coverage_line: CoverageLine
    # The coverage level (834 HD05: EMP, ESP, ECH, FAM...). None: the sender did not say; the ledger
    # keeps the tier it has, else the coverage is accepted with the tier unknown and a discrepancy for
    # the agency coordinator.
    tier: str | None = None
    action: EnrollmentAction
    status: CoverageStatus = "active"
    benefit_begin: date
    benefit_end: date | None = None
    agency_id: str
    # COBRA continuation (status "cobra"): the day the member elected it (the first payment is due a
    # number of days later), the first month of continuation coverage, and whether it is a disability
    # extension (months 19 to 29 are priced higher).
    elected_on: date | None = None
    cobra_start: date | None = None
    disability_extension: bool = False
    # Section 125: a dependent who is not a tax dependent (a domestic partner, typically) makes their
    # share of the premium post-tax and the employer-paid value imputed income.
    tax_dependent: bool = True
    # Why the change was made (834 INS04, e.g. "death" for code 03). A retiree's termination by death
    # waives the premium for the month of death when the plan says so (retiree_death_month_waived).
    reason: str | None = None
    # Group-term life (coverage_line "life"): the face amount, and the member's year of birth, which
    # gives the age at the end of the tax year that IRS Table I prices the coverage above $50,000 by.
    coverage_amount_cents: Cents | None = None
    birth_year: int | None = None
    # COBRA: the qualifying event and its date; the maximum coverage period counts from it (18 months,
    # 29 with a disability extension, 36 for a secondary event). None: the period is not checked.
    qualifying_event: QualifyingEvent | None = None
    qualifying_event_on: date | None = None
    # The covered person's date of birth (834 DMG02), for age limits of dependents (a child to 26).
    birth_date: date | None = None
    # Situational elements the sender left out and the adapter could neither derive nor default, each
    # with where it was missing, e.g. "HD05 (file 834_x.txt, line 40, segment 23)". Empty when the
    # sender said everything the ledger needs.
    missing_elements: tuple[str, ...] = ()


class RatePublished(Event, frozen=True, kw_only=True, tag="rate_published"):
    """Monthly premium for a plan and tier over a range of coverage months (first days)."""

    BROADCAST: ClassVar[bool] = True

    rate_id: str
    plan: str
    tier: str
    month_from: date
    month_through: date | None = None
    total_cents: Cents
    employee_cents: Cents
    employer_cents: Cents


class PremiumBilled(Event, frozen=True, kw_only=True, tag="premium_billed"):
    bill_id: str
    coverage_month: date
    plan: str
    tier: str
    amount_cents: Cents
    due_on: date
    agency_id: str | None = None


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


class AdjustmentPosted(Event, frozen=True, kw_only=True, tag="adjustment_posted"):
    """A correction to a month's billed amount (signed cents); never an edit of history."""

    adjustment_id: str
    coverage_month: date
    amount_cents: Cents
    reason: str
    plan: str | None = None


class DayClosed(Event, frozen=True, kw_only=True, tag="day_closed"):
    """A business day has ended; time-driven rules are decided here, never from the wall clock."""

    BROADCAST: ClassVar[bool] = True

    business_date: date


class BillingCycleClosed(Event, frozen=True, kw_only=True, tag="billing_cycle_closed"):
    """Billing for a coverage month is complete: a covered month with no bill is now a finding."""

    BROADCAST: ClassVar[bool] = True

    cycle_month: date


class DiscrepancyOpened(Event, frozen=True, kw_only=True, tag="discrepancy_opened"):
    discrepancy_id: str
    kind: DiscrepancyKind
    coverage_month: date | None = None
    payer_id: str | None = None
    expected_cents: Cents
    actual_cents: Cents
    cause_event_ids: tuple[str, ...]
    explanation: str
    action: str
    actor: Actor


class DiscrepancyAmountChanged(Event, frozen=True, kw_only=True, tag="discrepancy_amount_changed"):
    """An open discrepancy's amounts moved (a partial payment, a further bill): still open."""

    discrepancy_id: str
    kind: DiscrepancyKind
    coverage_month: date | None = None
    previous_expected_cents: Cents
    previous_actual_cents: Cents
    expected_cents: Cents
    actual_cents: Cents
    changing_event_ids: tuple[str, ...]
    explanation: str
    # What must be done now, when that changed too (a retroactive change's refund or bill); None in
    # events recorded before it was carried.
    action: str | None = None


class DiscrepancySuperseded(Event, frozen=True, kw_only=True, tag="discrepancy_superseded"):
    """A later retroactive change explains the discrepancy; it is closed, not fixed.

    ``superseded_by`` names the retroactive_change discrepancy that now carries the difference, if any.
    """

    discrepancy_id: str
    kind: DiscrepancyKind
    coverage_month: date | None = None
    superseding_event_ids: tuple[str, ...]
    superseded_by: str | None = None
    explanation: str


class DiscrepancyResolved(Event, frozen=True, kw_only=True, tag="discrepancy_resolved"):
    discrepancy_id: str
    kind: DiscrepancyKind
    coverage_month: date | None = None
    resolving_event_ids: tuple[str, ...]
    explanation: str


class FsaElectionMade(Event, frozen=True, kw_only=True, tag="fsa_election_made"):
    """A member's annual flexible spending account election for one plan year and account type.

    A later election for the same plan year and account type replaces the earlier one (a mid-year
    change). ``effective_on`` is the first day the election covers expenses (participation start).
    ``tax_filing_status`` matters for dependent care: married filing separately halves the limit.
    """

    election_id: str
    member_id: str
    plan_year: int
    account_type: FsaAccountType
    election_cents: Cents
    tax_filing_status: TaxFilingStatus | None = None


class FsaContributionReceived(Event, frozen=True, kw_only=True, tag="fsa_contribution_received"):
    """A payroll contribution to a flexible spending account; ``effective_on`` is the pay date."""

    contribution_id: str
    plan_year: int
    account_type: FsaAccountType
    amount_cents: Cents
    payer_id: str | None = None


class FsaClaimSubmitted(Event, frozen=True, kw_only=True, tag="fsa_claim_submitted"):
    """A claim for reimbursement from a flexible spending account.

    ``effective_on`` is the day the plan received the claim: the run-out deadline is judged by it.
    ``plan_year`` may be left out: the plan year is then derived from the service date.
    """

    claim_id: str
    account_type: FsaAccountType
    service_date: date
    amount_cents: Cents
    plan_year: int | None = None
    description: str = ""


class FsaClaimAdjudicated(Event, frozen=True, kw_only=True, tag="fsa_claim_adjudicated"):
    """The ledger's decision on one FSA claim, published to the claims topic (causation_id: the claim).

    ``approved_cents`` is what will be reimbursed; ``reason`` says why it is less than requested.
    """

    claim_id: str
    account_type: FsaAccountType
    plan_year: int
    decision: ClaimDecision
    requested_cents: Cents
    approved_cents: Cents
    reason: str
    available_before_cents: Cents
    available_after_cents: Cents
    # Dependent care: the part of the claim not yet paid because it was not yet contributed; it is paid
    # (another fsa_claim_adjudicated for the same claim, approved_cents the part paid then) as later
    # contributions arrive.
    pending_cents: Cents = 0


class NoticeIssued(Event, frozen=True, kw_only=True, tag="notice_issued"):
    """A notice sent to an agency coordinator or a member, listing the actions the discrepancies it names
    require (replay/notices.py makes it). On the payer account ``payer:<agency>`` for a coordinator, on
    the member's account for a member. ``known_at`` is the recorded time R the notice was produced as
    of: replaying the archive to R and rendering again gives the same document, whose HTML has the
    SHA-256 ``document_sha256``; ``effective_on`` is the day it was issued.
    """

    # lengths and characters are bounded by the codec, as for every id (events/codec.py)
    notice_id: Annotated[str, msgspec.Meta(min_length=1)]
    recipient: NoticeRecipient
    recipient_id: Annotated[str, msgspec.Meta(min_length=1)]
    discrepancy_ids: Annotated[
        tuple[Annotated[str, msgspec.Meta(min_length=1)], ...],
        msgspec.Meta(min_length=1, max_length=5000),
    ]
    known_at: datetime
    document_sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    channel: NoticeChannel = "mail"
    template_version: Annotated[int, msgspec.Meta(ge=1)] = 1


# ---------------------------------------------------------------------------------------------
# People working the queue (the web workbench, or a service with an API token). Every action is an
# event on the account of its discrepancy, folded like any other, so the archive is the audit trail
# of who did what and why, and replay shows the queue as it stood.

WorkflowRole = Literal["specialist", "supervisor", "auditor", "agency_coordinator"]
WorkStatus = Literal["open", "waiting_agency", "waiting_member"]
ClosedStatus = Literal["waived", "written_off", "closed"]

# Bounds of the free text a person types (characters).
REASON_CHARS_MAX = 2000
NOTE_CHARS_MAX = 4000
USER_CHARS_MAX = 100


class DiscrepancyAction(Event, frozen=True, kw_only=True):
    """What every action on a discrepancy carries: the discrepancy, who acted, in which role, and why.

    ``account_id`` is the discrepancy's account, so the action folds with it; ``effective_on`` is the
    business day of the action; ``agency_id`` names the agency of an agency coordinator.
    """

    discrepancy_id: str
    user: str
    role: WorkflowRole
    reason: str = ""
    agency_id: str | None = None


class DiscrepancyAssigned(DiscrepancyAction, frozen=True, kw_only=True, tag="discrepancy_assigned"):
    """Someone owns the discrepancy now (``assignee`` None: nobody)."""

    assignee: str | None = None


class DiscrepancyNoted(DiscrepancyAction, frozen=True, kw_only=True, tag="discrepancy_noted"):
    """A note on the discrepancy: research done, a call made, an agency's answer."""

    note: str


class DiscrepancyStatusSet(DiscrepancyAction, frozen=True, kw_only=True, tag="discrepancy_status_set"):
    """The discrepancy waits on the agency or the member, or is back with the accounts staff (open)."""

    work_status: WorkStatus


class DiscrepancyWaived(DiscrepancyAction, frozen=True, kw_only=True, tag="discrepancy_waived"):
    """Forgive the difference: an adjustment of ``amount_cents`` (signed, on the discrepancy's month)
    closes it as ``waived``. Above the plan's ``waiver_approval_cents`` it waits for a supervisor."""

    amount_cents: Cents


class DiscrepancyWrittenOff(DiscrepancyAction, frozen=True, kw_only=True, tag="discrepancy_written_off"):
    """Give up collecting (or refunding) the difference: like a waiver, closed as ``written_off``."""

    amount_cents: Cents


class WaiverApproved(DiscrepancyAction, frozen=True, kw_only=True, tag="waiver_approved"):
    """A supervisor approves the waiver or write-off ``request_event_id`` that waits for approval."""

    request_event_id: str


class WaiverRejected(DiscrepancyAction, frozen=True, kw_only=True, tag="waiver_rejected"):
    """A supervisor refuses the waiver or write-off ``request_event_id``; the discrepancy stays open."""

    request_event_id: str


class RetroChangeApproved(DiscrepancyAction, frozen=True, kw_only=True, tag="retro_change_approved"):
    """A supervisor approves a retroactive change beyond the limit: the month's billing follows it
    (adjustments of ``amount_cents`` in all, signed), and the retroactive_change is resolved."""

    amount_cents: Cents


class RetroChangeRejected(DiscrepancyAction, frozen=True, kw_only=True, tag="retro_change_rejected"):
    """A supervisor refuses a retroactive change beyond the limit: billing stays as it was and the
    retroactive_change is closed (``closed``) with the reason."""


class DiscrepancyDismissed(DiscrepancyAction, frozen=True, kw_only=True, tag="discrepancy_dismissed"):
    """Close a finding that no event can close (a billed_not_enrolled after a correct reversal and
    refund, say) with a reason; no money moves. The same finding with the same amounts stays closed."""


class DiscrepancyReopened(DiscrepancyAction, frozen=True, kw_only=True, tag="discrepancy_reopened"):
    """Undo a person's closing (a waiver's adjustment is reversed): the finding opens again, under a
    new discrepancy id."""


class DiscrepancyClosed(Event, frozen=True, kw_only=True, tag="discrepancy_closed"):
    """Output: a person closed the discrepancy: ``waived`` or ``written_off`` (with the adjustment of
    ``adjustment_cents`` on its month, so the balance agrees) or ``closed`` (no money moved)."""

    discrepancy_id: str
    kind: DiscrepancyKind
    coverage_month: date | None = None
    status: ClosedStatus
    closing_event_ids: tuple[str, ...]
    user: str
    reason: str
    adjustment_cents: Cents = 0
    explanation: str


WORKFLOW_TYPES: tuple[type[Event], ...] = (
    DiscrepancyAssigned, DiscrepancyNoted, DiscrepancyStatusSet, DiscrepancyWaived, DiscrepancyWrittenOff,
    WaiverApproved, WaiverRejected, RetroChangeApproved, RetroChangeRejected, DiscrepancyDismissed,
    DiscrepancyReopened,
)


InputEvent = (
    EnrollmentChanged
    | RatePublished
    | PremiumBilled
    | PaymentReceived
    | PaymentReversed
    | RefundIssued
    | RefundReturned
    | CashApplied
    | AdjustmentPosted
    | DayClosed
    | BillingCycleClosed
    | RemittanceReceived
    | RemittanceLinePosted
    | RemittanceFunded
    | FsaElectionMade
    | FsaContributionReceived
    | FsaClaimSubmitted
    | NoticeIssued
    | DiscrepancyAssigned
    | DiscrepancyNoted
    | DiscrepancyStatusSet
    | DiscrepancyWaived
    | DiscrepancyWrittenOff
    | WaiverApproved
    | WaiverRejected
    | RetroChangeApproved
    | RetroChangeRejected
    | DiscrepancyDismissed
    | DiscrepancyReopened
)
OutputEvent = (
    DiscrepancyOpened | DiscrepancyAmountChanged | DiscrepancySuperseded | DiscrepancyResolved | FsaClaimAdjudicated
    | DiscrepancyClosed
)
AnyEvent = InputEvent | OutputEvent

INPUT_TYPES: tuple[type[Event], ...] = (
    EnrollmentChanged,
    RatePublished,
    PremiumBilled,
    PaymentReceived,
    PaymentReversed,
    RefundIssued,
    RefundReturned,
    CashApplied,
    AdjustmentPosted,
    DayClosed,
    BillingCycleClosed,
    RemittanceReceived,
    RemittanceLinePosted,
    RemittanceFunded,
    FsaElectionMade,
    FsaContributionReceived,
    FsaClaimSubmitted,
    NoticeIssued,
    *WORKFLOW_TYPES,
)
OUTPUT_TYPES: tuple[type[Event], ...] = (
    DiscrepancyOpened, DiscrepancyAmountChanged, DiscrepancySuperseded, DiscrepancyResolved, FsaClaimAdjudicated,
    DiscrepancyClosed,
)
FSA_TYPES: tuple[type[Event], ...] = (FsaElectionMade, FsaContributionReceived, FsaClaimSubmitted)


def tag_of(cls: type[Event]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag
