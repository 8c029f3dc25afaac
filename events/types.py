"""The event language: frozen, tagged, versioned msgspec Structs. Money is integer cents.

The types are declared by domain, each module readable on its own: events/base.py (what every event
carries), enrollment.py, billing.py (rates, bills, adjustments), payments.py (payments, remittances,
refunds, cash applications), operations.py (business days, billing cycles), discrepancies.py (findings
and notices), fsa.py and workflow.py (people working the queue). This module is the one import for
all of them: it re-exports each, and declares the unions and the registry of input and output types,
whose order the codec and the contracts follow.
"""

from __future__ import annotations

from events.base import BROADCAST_ACCOUNT as BROADCAST_ACCOUNT
from events.base import Cents as Cents
from events.base import Event as Event
from events.billing import AdjustmentPosted as AdjustmentPosted
from events.billing import PremiumBilled as PremiumBilled
from events.billing import RatePublished as RatePublished
from events.discrepancies import DISCREPANCY_KINDS as DISCREPANCY_KINDS
from events.discrepancies import Actor as Actor
from events.discrepancies import DiscrepancyAmountChanged as DiscrepancyAmountChanged
from events.discrepancies import DiscrepancyKind as DiscrepancyKind
from events.discrepancies import DiscrepancyOpened as DiscrepancyOpened
from events.discrepancies import DiscrepancyResolved as DiscrepancyResolved
from events.discrepancies import DiscrepancySuperseded as DiscrepancySuperseded
from events.discrepancies import NoticeChannel as NoticeChannel
from events.discrepancies import NoticeIssued as NoticeIssued
from events.discrepancies import NoticeRecipient as NoticeRecipient
from events.enrollment import CoverageLine as CoverageLine
from events.enrollment import CoverageStatus as CoverageStatus
from events.enrollment import EnrollmentAction as EnrollmentAction
from events.enrollment import EnrollmentChanged as EnrollmentChanged
from events.enrollment import QualifyingEvent as QualifyingEvent
from events.enrollment import Relationship as Relationship
from events.fsa import ClaimDecision as ClaimDecision
from events.fsa import FsaAccountType as FsaAccountType
from events.fsa import FsaClaimAdjudicated as FsaClaimAdjudicated
from events.fsa import FsaClaimSubmitted as FsaClaimSubmitted
from events.fsa import FsaContributionReceived as FsaContributionReceived
from events.fsa import FsaElectionMade as FsaElectionMade
from events.fsa import TaxFilingStatus as TaxFilingStatus
from events.operations import BillingCycleClosed as BillingCycleClosed
from events.operations import DayClosed as DayClosed
from events.payments import CashApplied as CashApplied
from events.payments import PayFrequency as PayFrequency
from events.payments import PaymentMethod as PaymentMethod
from events.payments import PaymentReceived as PaymentReceived
from events.payments import PaymentReversed as PaymentReversed
from events.payments import RefundIssued as RefundIssued
from events.payments import RefundReturned as RefundReturned
from events.payments import RemittanceAdjustment as RemittanceAdjustment
from events.payments import RemittanceFunded as RemittanceFunded
from events.payments import RemittanceLinePosted as RemittanceLinePosted
from events.payments import RemittanceReceived as RemittanceReceived
from events.payments import TaxTreatment as TaxTreatment
from events.workflow import NOTE_CHARS_MAX as NOTE_CHARS_MAX
from events.workflow import REASON_CHARS_MAX as REASON_CHARS_MAX
from events.workflow import USER_CHARS_MAX as USER_CHARS_MAX
from events.workflow import WORKFLOW_TYPES as WORKFLOW_TYPES
from events.workflow import ClosedStatus as ClosedStatus
from events.workflow import DiscrepancyAction as DiscrepancyAction
from events.workflow import DiscrepancyAssigned as DiscrepancyAssigned
from events.workflow import DiscrepancyClosed as DiscrepancyClosed
from events.workflow import DiscrepancyDismissed as DiscrepancyDismissed
from events.workflow import DiscrepancyNoted as DiscrepancyNoted
from events.workflow import DiscrepancyReopened as DiscrepancyReopened
from events.workflow import DiscrepancyStatusSet as DiscrepancyStatusSet
from events.workflow import DiscrepancyWaived as DiscrepancyWaived
from events.workflow import DiscrepancyWrittenOff as DiscrepancyWrittenOff
from events.workflow import RetroChangeApproved as RetroChangeApproved
from events.workflow import RetroChangeRejected as RetroChangeRejected
from events.workflow import WaiverApproved as WaiverApproved
from events.workflow import WaiverRejected as WaiverRejected
from events.workflow import WorkflowRole as WorkflowRole
from events.workflow import WorkStatus as WorkStatus

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
