"""Flexible spending accounts: elections, payroll contributions, claims and the ledger's decisions."""

from __future__ import annotations

from datetime import date
from typing import Literal

from events.base import Cents, Event

FsaAccountType = Literal["health", "dependent_care"]
TaxFilingStatus = Literal["single", "married_filing_jointly", "married_filing_separately", "head_of_household"]
# "pending": nothing paid yet, the claim waits for dependent-care contributions (pending_cents).
ClaimDecision = Literal["approved", "partially_approved", "denied", "pending"]


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
