"""People working the queue (the web workbench, or a service with an API token). Every action is an
event on the account of its discrepancy, folded like any other, so the archive is the audit trail of
who did what and why, and replay shows the queue as it stood."""

from __future__ import annotations

from datetime import date
from typing import Literal

from events.base import Cents, Event
from events.discrepancies import DiscrepancyKind

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
