"""What a generated program is made of: its members, its phases of events, and what the ledger must
make of them (the discrepancy rows with the status each ends in, the FSA claim decisions)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from events.types import Event
from processor.settings import PlanSettings

INJECTED_KINDS = (
    "underpaid",
    "overpaid",
    "billed_not_enrolled",
    "wrong_rate",
    "unmatched_payment",
    "paid_after_termination",
    "duplicate_payment",
    "missing_payment",
    "retroactive_change",
    "enrolled_not_billed",
    "tax_treatment",
    "refund_due",
    "remittance_total_mismatch",
    "cobra_shortfall",
    "unknown_coverage",
    "eligibility",
    "refund_recovery",
)
# how the ledger decides a claim when it is submitted ("pending": a dependent-care claim with nothing
# contributed yet, paid as contributions arrive)
CLAIM_DECISIONS = ("approved", "partially_approved", "denied", "pending")
TIERS = ("EMP", "ESP", "ECH", "FAM")


class ProgramTooSmall(ValueError):
    """The members and months asked for cannot carry every injected error (a usage error of the demo)."""


Expected = tuple[str, str, date | None]  # (kind, account_id, coverage_month): one finding
ExpectedRow = tuple[str, str, date | None, str]  # a finding's discrepancy row and the status it must end in


Adjudication = tuple[str, int, int]  # (decision, approved cents of this adjudication, pending cents after it)


@dataclass(frozen=True)
class ExpectedClaim:
    """A claim and every fsa_claim_adjudicated the ledger must publish for it, in order: its decision
    when submitted, then one for each later contribution that pays part of a pending remainder."""

    account_id: str
    account_type: str
    requested_cents: int
    why: str  # what the generator made of it (ordinary, beyond contributions, nothing left, ...)
    adjudications: tuple[Adjudication, ...]

    @property
    def decision(self) -> str:
        """The decision when the claim was submitted."""
        return self.adjudications[0][0]

    @property
    def approved_cents(self) -> int:
        """Everything approved for the claim, later payments of its pending remainder included."""
        return sum(a[1] for a in self.adjudications)


@dataclass
class Program:
    phases: list[tuple[str, list[Event]]]
    expected: set[Expected]
    members: int
    accounts: int
    months: int
    raw_records: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)  # (topic key, k, v)
    exact_duplicates: list[Event] = field(default_factory=list)
    # every discrepancy row the ledger must record, with its final status: one row ("open") per finding
    # unless the program settles it (a refund, a cash application) or reopens it (a returned refund)
    expected_rows: Counter[ExpectedRow] = field(default_factory=Counter)
    # the event that closes each row not left open, in order: its amounts are those the month shows
    # just before that event (the oracle replays the program to read them)
    closed_by: dict[ExpectedRow, list[str]] = field(default_factory=dict)
    # (account, month) a retroactive change reaches back into -> the first event of that change: the
    # premium "before" is the month's premium before it
    retro_changes: dict[tuple[str, date], str] = field(default_factory=dict)
    claims: dict[str, ExpectedClaim] = field(default_factory=dict)  # claim_id -> the expected adjudication
    # events the ledger posts itself through the outbox to the payments topic: a payment per cash_applied,
    # and a remittance_line_posted per remittance line applied on a member's account (reported to the
    # payer's account, where the remittance is reconciled); the processor receives that many records
    # more than were published
    derived_payments: int = 0
    derived_lines: int = 0
    plan: PlanSettings = field(default_factory=PlanSettings)  # the rules the program was priced with

    @property
    def events(self) -> int:
        return sum(len(p) for _, p in self.phases)

    @property
    def derived(self) -> int:
        """Every record the ledger posts itself: received = published + derived."""
        return self.derived_payments + self.derived_lines

    def expected_findings(self) -> Counter[Expected]:
        """How many discrepancy rows each finding must have (two for a refund_due reopened by a return)."""
        found: Counter[Expected] = Counter()
        for (kind, account, month, _status), n in self.expected_rows.items():
            found[(kind, account, month)] += n
        return found


@dataclass
class Coverage:
    plan: str
    tier: str
    begin: date


@dataclass
class Dependent:
    """A spouse or domestic partner ("partner") or a child, covered on the subscriber's health line."""

    number: int  # member id <account>-D<number>
    kind: str  # partner | child
    birth_date: date
    begin: date | None = None  # covered from (None: with the subscriber)
    end: date | None = None  # last covered day HR has sent (None: still covered)


@dataclass
class Member:
    account_id: str
    agency_id: str
    direct_pay: bool
    status: str
    hired: date  # first covered month (for COBRA, the first month of continuation coverage)
    coverages: dict[str, Coverage]  # coverage line -> coverage
    family: list[Dependent] = field(default_factory=list)  # everyone ever covered besides the subscriber
    elected_on: date | None = None  # COBRA election, before HR sends the enrollment
    begin_day: int = 1  # day of the first month coverage begins on (a mid-month hire: after the 1st)

    @property
    def begins(self) -> date:
        return self.hired.replace(day=self.begin_day)

    @property
    def covered_family(self) -> list[Dependent]:
        """The dependents HR has not ended."""
        return [d for d in self.family if d.end is None]

    def children(self) -> list[Dependent]:
        return [d for d in self.covered_family if d.kind == "child"]

    def partner(self) -> Dependent | None:
        return next((d for d in self.covered_family if d.kind == "partner"), None)
