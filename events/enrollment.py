"""Enrollment: a member's coverage on the subscriber's account, as HR reports it (X12 834)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from events.base import Cents, Event

# "ltc": long-term care (834 HD03 LTC).
CoverageLine = Literal["health", "dental", "vision", "life", "ltd", "std", "fsa", "dcap", "ltc"]
Relationship = Literal["self", "spouse", "child", "domestic_partner", "other"]
EnrollmentAction = Literal["add", "change", "terminate", "reinstate"]
CoverageStatus = Literal["active", "cobra", "retiree"]
# What started a COBRA continuation (42 USC 300bb-3): termination or reduced hours give 18 months (29
# with a disability extension); the secondary events give 36.
QualifyingEvent = Literal["termination", "reduced_hours", "death", "divorce", "dependent_loss", "medicare"]


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
