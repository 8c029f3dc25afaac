"""Discrepancies: what the ledger finds wrong, why and who must act, and the notices that list them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal, get_args

import msgspec

from events.base import Cents, Event

Actor = Literal["agency_coordinator", "payroll", "member", "billing", "accounts_staff"]
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
