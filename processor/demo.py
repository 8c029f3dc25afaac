"""A realistic synthetic benefits program with known injected errors, and the demo that runs it.

The generator is deterministic for a seed. It emits the program as phases in business order (rates and
enrollment, then billing, then payments, then flexible spending accounts, then the day closing), and
records every discrepancy it injected as (kind, account_id, coverage_month) with the status each of its
rows must end in, and the decision and approved amount of every FSA claim, so the demo can count what
was missed and what was found without being injected. Those claim decisions come from the generator's
own model of the FSA rules (``_FsaYear``), never from processor/fsa.py: the check would be vacuous.
"""

from __future__ import annotations

import asyncio
import random
import time as _time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from events import codec
from events.types import (
    BROADCAST_ACCOUNT,
    BillingCycleClosed,
    CashApplied,
    DayClosed,
    EnrollmentChanged,
    Event,
    FsaClaimAdjudicated,
    FsaClaimSubmitted,
    FsaContributionReceived,
    FsaElectionMade,
    PaymentReceived,
    PremiumBilled,
    RatePublished,
    RefundIssued,
    RefundReturned,
    RemittanceReceived,
)
from processor.app import run_services
from processor.fold import last_day
from processor.settings import FsaSettings, PlanSettings

SOURCE = "demo-generator"

# plan -> (coverage line, monthly total by tier in cents for the first half year, employer share percent)
PLANS: dict[str, tuple[str, dict[str, int], int]] = {
    "UMP-CLASSIC": ("health", {"EMP": 78_412, "ESP": 154_380, "ECH": 136_105, "FAM": 211_963}, 85),
    "KP-WA-VALUE": ("health", {"EMP": 70_118, "ESP": 138_070, "ECH": 121_781, "FAM": 189_633}, 85),
    "DELTA-PPO": ("dental", {"EMP": 6_450, "ESP": 12_900, "ECH": 12_255, "FAM": 18_705}, 100),
    "VSP-VISION": ("vision", {"EMP": 1_212, "ESP": 2_121, "ECH": 2_169, "FAM": 3_398}, 100),
}
RENEWAL_INCREASE_PERCENT = 6
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
)
COBRA_SHARE = 0.04  # of the population: former employees and dependents on COBRA continuation coverage
FSA_SHARE = 0.10  # of the subscribers: active employees with a health and/or dependent-care FSA election
CLAIM_DECISIONS = ("approved", "partially_approved", "denied")
Expected = tuple[str, str, date | None]  # (kind, account_id, coverage_month): one finding
ExpectedRow = tuple[str, str, date | None, str]  # a finding's discrepancy row and the status it must end in


@dataclass(frozen=True)
class ExpectedClaim:
    account_id: str
    account_type: str
    decision: str  # approved | partially_approved | denied
    approved_cents: int
    requested_cents: int
    why: str  # what the generator made of it (ordinary, beyond contributions, nothing left, ...)


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
    claims: dict[str, ExpectedClaim] = field(default_factory=dict)  # claim_id -> the expected adjudication
    # payments the ledger posts itself (one per cash_applied, through the outbox to the payments topic): the
    # processor receives that many records more than were published
    derived_payments: int = 0

    @property
    def events(self) -> int:
        return sum(len(p) for _, p in self.phases)

    def expected_findings(self) -> Counter[Expected]:
        """How many discrepancy rows each finding must have (two for a refund_due reopened by a return)."""
        found: Counter[Expected] = Counter()
        for (kind, account, month, _status), n in self.expected_rows.items():
            found[(kind, account, month)] += n
        return found


@dataclass
class _Coverage:
    plan: str
    tier: str
    begin: date


@dataclass
class _Member:
    account_id: str
    agency_id: str
    direct_pay: bool
    status: str
    hired: date  # first covered month (for COBRA, the first month of continuation coverage)
    coverages: dict[str, _Coverage]  # coverage line -> coverage
    terminated_after: date | None = None  # last covered day
    dependents: int = 0
    elected_on: date | None = None  # COBRA election, before HR sends the enrollment


def _elect_cobra(p: _Member, rng: random.Random) -> None:
    """Make a member a COBRA continuation member: pays the 102% premium directly, elected a few weeks
    before continuation coverage began (and before HR sent the enrollment, 12 days before)."""
    p.status, p.direct_pay = "cobra", True
    p.elected_on = p.hired - timedelta(days=12 + rng.randrange(30))


def _add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, 1)


def _rate(plan: str, tier: str, month: date, renewal: date) -> tuple[int, int, int]:
    _line, totals, employer_pct = PLANS[plan]
    total = totals[tier]
    if month >= renewal:
        total = total * (100 + RENEWAL_INCREASE_PERCENT) // 100
    employer = total * employer_pct // 100
    return total, total - employer, employer


def _cobra_premium(total: int, plan: PlanSettings) -> int:
    """A COBRA month's premium for one coverage: cobra_premium_percent (102) of the plan cost, rounded
    half up to the cent, as processor/fold.py segment_premium prices it (no disability extensions here)."""
    return (total * plan.cobra_premium_percent + 50) // 100


@dataclass
class _FsaYear:
    """The generator's own model of one FSA of one plan year, from the rules in DOMAIN.md and README
    ("Flexible spending accounts"), independent of processor/fsa.py: health FSA, uniform coverage (the
    whole election from the first day); dependent care, only what has been contributed so far."""

    account_type: str
    election_cents: int
    begins: date  # participation start: the first service date it pays for
    through: date  # the last service date it pays for (the plan year's last day, or its grace period's)
    claims_until: date  # the last day a claim may be submitted (the run-out)
    contributed_cents: int = 0
    reimbursed_cents: int = 0

    def available(self) -> int:
        if self.account_type == "health":
            return self.election_cents - self.reimbursed_cents
        return min(self.contributed_cents, self.election_cents) - self.reimbursed_cents

    def decide(self, year_start: date, service: date, submitted: date, amount: int) -> tuple[str, int]:
        """(decision, approved cents) of a claim naming this plan year; reimbursed moves with it."""
        if not (max(year_start, self.begins) <= service <= min(self.through, submitted)) or (
                submitted > self.claims_until):
            return "denied", 0
        available = self.available()
        if available <= 0:
            return "denied", 0
        approved = min(amount, available)
        self.reimbursed_cents += approved
        return ("approved" if approved == amount else "partially_approved"), approved


def _fsa_program(
    participants: list[_Member], start: date, months: int, per_kind: int, s: FsaSettings, rng: random.Random,
    eid: Callable[[str], str], at: Callable[[date, int], datetime],
) -> tuple[dict[date, list[Event]], dict[str, ExpectedClaim]]:
    """Elections, payroll contributions and claims of the FSA participants in the plan year the program
    starts in (its later months carry no FSA activity), by month, with the expected decision of each claim.

    Most claims fit what is available; on top of them, a few of each: a dependent-care claim beyond what
    has been contributed (partially approved), a health claim beyond the rest of the election followed by
    one more (partially approved, then denied: nothing left), a claim whose service date is before the
    plan year it names, and one for an expense not yet incurred (both denied)."""
    year = start.year if start.month >= s.plan_year_start_month else start.year - 1
    year_start, next_start = date(year, s.plan_year_start_month, 1), date(year + 1, s.plan_year_start_month, 1)
    year_end = next_start - timedelta(days=1)
    grace_months, grace_days = s.grace_period
    health_through = _add_months(next_start, grace_months) + timedelta(days=grace_days - 1) if (
        s.health_year_end == "grace_period") else year_end
    end = _add_months(start, months)
    fsa_months = [m for m in (_add_months(start, i) for i in range(months)) if year_start <= m <= year_end]
    by_month: dict[date, list[Event]] = {m: [] for m in fsa_months}
    claims: dict[str, ExpectedClaim] = {}
    if not fsa_months:
        return by_month, claims

    # Who elects what, and how payroll contributes to it.
    plans: list[tuple[_Member, str, int, str | None, date]] = []  # member, account type, election, status, from
    pay_dates: dict[str, list[date]] = {}
    for i, p in enumerate(participants):
        begins = max(p.hired, year_start)
        if begins not in by_month:
            continue  # hired after the plan year (or the program) ended
        wanted = ["health", "dependent_care"] if i == 0 else [
            t for t, share in (("health", 0.75), ("dependent_care", 0.35)) if rng.random() < share] or ["health"]
        for account_type in wanted:
            status: str | None = None
            if account_type == "health":
                limit = s.health_limit_cents
            else:
                status = "married_filing_separately" if rng.random() < 0.1 else rng.choice(
                    ["single", "married_filing_jointly", "head_of_household"])
                limit = s.dependent_care_mfs_limit_cents if status == "married_filing_separately" else (
                    s.dependent_care_limit_cents)
            high = limit // 1_000  # elections in whole $10, within the plan's limit
            election = rng.randint(min(50 if account_type == "health" else 100, high), high) * 1_000
            if election > 0:
                plans.append((p, account_type, election, status, begins))
        if rng.random() < 0.6:  # biweekly payroll, paid on Fridays two weeks apart; else monthly on the 25th
            dates = [year_start + timedelta(days=8 + 14 * k) for k in range(27)]
        else:
            dates = [_add_months(year_start, k) + timedelta(days=24) for k in range(12)]
        pay_dates[p.account_id] = [d for d in dates if begins <= d <= year_end]

    # The claims that are not ordinary, each on one account in one month.
    n = max(1, per_kind // 4)
    health = [i for i, plan in enumerate(plans) if plan[1] == "health"]
    care = [i for i, plan in enumerate(plans) if plan[1] == "dependent_care"]
    anyone = list(range(len(plans)))
    for pool in (health, care, anyone):
        rng.shuffle(pool)
    special: dict[int, list[str]] = {}
    for why, pool in (("beyond contributions", care), ("nothing left", health), ("before the plan year", anyone),
                      ("not yet incurred", anyone[n:] + anyone[:n])):
        for i in pool[:n]:
            special.setdefault(i, []).append(why)
    descriptions = {"health": ["office visit copay", "prescription", "dental cleaning", "eyeglasses",
                               "physical therapy"],
                    "dependent_care": ["day care", "after-school care", "summer day camp"]}

    for i, (p, account_type, election, status, begins) in enumerate(plans):
        code = "H" if account_type == "health" else "D"
        model = _FsaYear(account_type, election, begins, health_through if account_type == "health" else year_end,
                         (health_through if account_type == "health" else year_end)
                         + timedelta(days=s.run_out_days))
        by_month[begins].append(FsaElectionMade(
            event_id=eid("fsa-elect"), account_id=p.account_id, effective_on=begins,
            occurred_at=at(begins - timedelta(days=20), 10), source="benefits-enrollment",
            election_id=f"FE{year}-{p.account_id}-{code}", member_id=p.account_id, plan_year=year,
            account_type=account_type, election_cents=election,  # type: ignore[arg-type]
            tax_filing_status=status,  # type: ignore[arg-type]
        ))
        dates = pay_dates[p.account_id]
        per = election // len(dates) if dates else 0
        amounts = {d: per if k < len(dates) - 1 else election - per * (len(dates) - 1) for k, d in enumerate(dates)}
        months_in = [m for m in fsa_months if m >= begins]
        planned = {why: rng.choice(months_in) for why in special.get(i, [])}
        claim_no = 0
        for m in months_in:
            # (day, 0 contribution / 1 claim, what): contributions first on a day, then claims in order
            todo: list[tuple[date, int, str]] = [(d, 0, "contribution") for d in dates if m <= d < _add_months(m, 1)]
            if rng.random() < (0.3 if account_type == "health" else 0.6):
                low = 0 if account_type == "health" else 14  # day care is claimed once the month is billed
                todo.append((m + timedelta(days=rng.randrange(low, 27)), 1, "ordinary"))
            for why, when in planned.items():
                if when == m:
                    offset = 27 if why == "beyond contributions" else rng.randrange(2, 20)
                    todo.append((m + timedelta(days=offset), 1, why))
            for day, _order, what in sorted(todo, key=lambda t: (t[0], t[1])):
                if what == "contribution":
                    model.contributed_cents += amounts[day]
                    by_month[m].append(FsaContributionReceived(
                        event_id=eid("fsa-pay"), account_id=p.account_id, effective_on=day,
                        occurred_at=at(day, 18), source="payroll",
                        contribution_id=f"FC{day:%Y%m%d}-{p.account_id}-{code}", plan_year=year,
                        account_type=account_type,  # type: ignore[arg-type]
                        amount_cents=amounts[day], payer_id=p.agency_id,
                    ))
                    continue
                available = model.available()
                named_year: int | None = None
                service = max(begins, day - timedelta(days=rng.randrange(0, 26)))
                if what == "ordinary":
                    low = 2_000 if account_type == "health" else 5_000
                    if available < low:
                        continue  # nothing much left: the member has nothing to claim
                    amount = rng.randint(low, min(available, 60_000 if account_type == "health" else 150_000))
                elif what in ("beyond contributions", "nothing left"):
                    amount = max(available, 0) + rng.randint(2_000, 40_000)
                elif what == "before the plan year":
                    named_year, service = year, year_start - timedelta(days=rng.randint(1, 25))
                    amount = rng.randint(2_000, 50_000)
                else:  # not yet incurred: next month's day care, this summer's camp
                    service, amount = day + timedelta(days=rng.randint(3, 20)), rng.randint(2_000, 50_000)
                follow_up = [(day + timedelta(days=3), rng.randint(2_000, 20_000))] if what == "nothing left" else []
                for submitted, requested in [(day, amount), *follow_up]:
                    if submitted >= end or submitted > year_end:
                        continue
                    decision, approved = model.decide(year_start, service, submitted, requested)
                    claim_no += 1
                    claim_id = f"FC-{p.account_id}-{code}{claim_no:03d}"
                    claims[claim_id] = ExpectedClaim(p.account_id, account_type, decision, approved, requested, what)
                    by_month[m].append(FsaClaimSubmitted(
                        event_id=eid("fsa-claim"), account_id=p.account_id, effective_on=submitted,
                        occurred_at=at(submitted, 11), source="fsa-claims-portal", claim_id=claim_id,
                        account_type=account_type, service_date=service,  # type: ignore[arg-type]
                        amount_cents=requested, plan_year=named_year,
                        description=rng.choice(descriptions[account_type]),
                    ))
    return by_month, claims


def _refund(
    p: _Member, month: date, credit: int, n: int, scheduled: dict[date, list[Event]],
    eid: Callable[[str], str], at: Callable[[date, int], datetime],
) -> list[str]:
    """The accounts staff act on the n-th refund due, in the month after the overpaid one (when the
    termination that makes it a refund has arrived): one in three is refunded and the check comes back
    (the credit is on the month again: refund_due opens anew), one in three is refunded, one in three is
    left open. Returns the final status of each refund_due row of the month."""
    if n % 3 == 2:
        return ["open"]
    payee = p.account_id if p.direct_pay else p.agency_id
    refund_id = f"RF{month:%Y%m}-{p.account_id}"
    issued_on = _add_months(month, 1) + timedelta(days=6)
    events: list[Event] = [RefundIssued(
        event_id=eid("refund"), account_id=p.account_id, effective_on=issued_on, occurred_at=at(issued_on, 10),
        source="accounts-staff", refund_id=refund_id, payee_id=payee, amount_cents=credit,
        method="check" if p.direct_pay else "ach", reason="premium paid for a month after coverage ended",
        coverage_month=month,
    )]
    if n % 3 == 0:
        returned_on = issued_on + timedelta(days=12)
        events.append(RefundReturned(
            event_id=eid("refund-back"), account_id=p.account_id, effective_on=returned_on,
            occurred_at=at(returned_on, 10), source="bank-returns", refund_id=refund_id,
            reason="R03 no account/unable to locate account" if not p.direct_pay else "check returned: moved",
        ))
    scheduled.setdefault(_add_months(month, 1), []).extend(events)
    return ["resolved", "open"] if n % 3 == 0 else ["resolved"]


def generate(members: int, months: int, seed: int, start: date = date(2026, 1, 1),
             plan: PlanSettings | None = None) -> Program:
    """The whole program: every event, in business order, plus the injected discrepancies.

    ``plan`` (default: the default plan settings) gives the COBRA premium percent and the COBRA
    shortfall limits, so the program's bills and shortfalls match the ledger's rules."""
    if members < 20 or months < 3:
        raise ValueError("the demo needs at least 20 members and 3 months to place every injected error")
    rules = plan or PlanSettings()
    rng = random.Random(seed)
    renewal = _add_months(start, months // 2)
    n_agencies = max(3, members // 150)
    agencies = [f"AG-{i:03d}" for i in range(1, n_agencies + 1)]
    seq = 0

    def eid(prefix: str) -> str:
        nonlocal seq
        seq += 1
        return f"demo-{seed}-{prefix}-{seq:07d}"

    def at(day: date, hour: int = 9) -> datetime:
        return datetime.combine(day, time(hour, rng.randrange(60)), UTC)

    # The population: most start in the first month, some are hired later in the year.
    people: list[_Member] = []
    for i in range(members):
        hired = start if rng.random() < 0.85 else _add_months(start, rng.randrange(1, months))
        tier = rng.choices(["EMP", "ESP", "ECH", "FAM"], weights=[45, 20, 15, 20])[0]
        covs = {"health": _Coverage(rng.choice(["UMP-CLASSIC", "KP-WA-VALUE"]), tier, hired)}
        if rng.random() < 0.6:
            covs["dental"] = _Coverage("DELTA-PPO", tier, hired)
        if rng.random() < 0.35:
            covs["vision"] = _Coverage("VSP-VISION", tier, hired)
        retiree = rng.random() < 0.06
        people.append(_Member(
            account_id=f"M{seed % 100:02d}{i:06d}", agency_id=rng.choice(agencies), direct_pay=retiree,
            status="retiree" if retiree else "active", hired=hired, coverages=covs,
            dependents={"EMP": 0, "ESP": 1, "ECH": rng.randint(1, 3), "FAM": rng.randint(2, 4)}[tier],
        ))

    # Ordinary life events (not errors): terminations, tier changes at the start of a month.
    term_month: dict[str, date] = {}
    tier_change: dict[str, tuple[date, str]] = {}
    for p in people:
        r = rng.random()
        first_possible = _add_months(p.hired, 2)
        if first_possible >= _add_months(start, months):
            continue
        month = _add_months(first_possible, rng.randrange(max(1, months - 2)))
        if month >= _add_months(start, months):
            continue
        if r < 0.05:
            term_month[p.account_id] = month  # coverage ends the day before
        elif r < 0.10:
            new_tier = rng.choice([t for t in ("EMP", "ESP", "ECH", "FAM") if t != p.coverages["health"].tier])
            tier_change[p.account_id] = (month, new_tier)

    # Choose the injected errors on distinct (account, month) cells of steadily enrolled members.
    per_kind = max(1, members * months // 1500)
    steady = [p for p in people if p.hired == start and p.account_id not in term_month
              and p.account_id not in tier_change]
    rng.shuffle(steady)
    injections: dict[tuple[str, date], str] = {}
    cursor = 0
    for kind in INJECTED_KINDS:
        if kind in ("unmatched_payment", "remittance_total_mismatch"):
            continue
        if kind == "cobra_shortfall":
            continue  # placed below, once the COBRA members are chosen
        placed = 0
        while placed < per_kind:
            if cursor >= len(steady):
                raise ValueError("not enough members to place the injected errors; raise --members")
            p = steady[cursor]
            cursor += 1
            if kind == "paid_after_termination" and p.direct_pay:
                continue
            if kind == "tax_treatment" and (p.direct_pay or p.dependents == 0):
                continue  # a payroll deduction for coverage that includes a partner
            # month 1..months-2 so that a following month exists (termination, missing-payment deadline)
            month = _add_months(start, rng.randrange(1, months - 1))
            injections[(p.account_id, month)] = kind
            if kind in ("paid_after_termination", "billed_not_enrolled"):
                term_month[p.account_id] = month
            if kind == "refund_due":
                term_month[p.account_id] = _add_months(month, 1)  # coverage ends with the overpaid month
            placed += 1

    # Members whose first dependent is a domestic partner who is not a tax dependent: the injected
    # tax-treatment errors, and as many again whose payroll gets it right.
    partner_accounts = {a for (a, _), kind in injections.items() if kind == "tax_treatment"}
    partner_accounts |= {p.account_id for p in steady[cursor:cursor + len(partner_accounts)] if p.dependents}

    # COBRA continuation members: a small share of the members who carry no other injected error (a small
    # underpayment of theirs would be a COBRA shortfall, not underpaid), later starts, tier changes and
    # ordinary terminations included. A few of them pay one month a little short: the COBRA shortfalls.
    end = _add_months(start, months)

    def covered(p: _Member) -> list[date]:
        """The months billed to the member (and paid in full unless an error is injected)."""
        last = term_month.get(p.account_id, end)
        return [m for m in (_add_months(start, i) for i in range(months)) if p.hired <= m < last]

    taken = {a for a, _ in injections} | partner_accounts
    eligible = [p for p in people if p.status == "active" and p.account_id not in taken and covered(p)]
    if len(eligible) < per_kind:
        raise ValueError("not enough members to place the injected errors; raise --members")
    cobra = rng.sample(eligible, k=min(len(eligible), max(per_kind, round(members * COBRA_SHARE))))
    for p in cobra:
        _elect_cobra(p, rng)
    for p in cobra[:per_kind]:
        injections[(p.account_id, rng.choice(covered(p)))] = "cobra_shortfall"
    # Agency remittances whose payment total is not the sum of their lines, one per agency at most.
    remit_errors = {(a, _add_months(start, rng.randrange(months)))
                    for a in rng.sample(agencies, k=min(per_kind, len(agencies)))}
    # Payroll lines sent under a mistyped member id (a digit too many): unmatched cash on an account nobody
    # knows while the member's month goes unpaid, a missing payment once its grace period has run out. Two
    # months later the accounts staff apply the cash to the member's month (cash_applied); the ledger posts
    # the payment there itself, and both discrepancies are resolved.
    cobra_ids = {p.account_id for p in cobra}
    targets = [p for p in eligible if p.account_id not in cobra_ids
               and any(_add_months(m, 2) < end for m in covered(p))]
    misdirected: dict[tuple[str, date], str] = {}
    for p in rng.sample(targets, k=min(len(targets), max(1, per_kind // 2))):
        month = rng.choice([m for m in covered(p) if _add_months(m, 2) < end])
        misdirected[(p.account_id, month)] = f"{p.account_id}{rng.randrange(10)}"

    # Flexible spending accounts of active payroll employees who carry no injected premium error.
    fsa_candidates = [p for p in people if p.status == "active" and not p.direct_pay
                      and p.account_id not in taken and p.account_id not in term_month
                      and p.account_id not in {a for a, _ in misdirected}]
    participants = rng.sample(fsa_candidates, k=min(len(fsa_candidates), max(3, round(members * FSA_SHARE))))
    participants.sort(key=lambda p: p.account_id)
    fsa_by_month, claims = _fsa_program(participants, start, months, per_kind, rules.fsa, rng, eid, at)

    expected: set[Expected] = set()
    statuses: dict[Expected, list[str]] = {}  # final status of each row of a finding; default one open row
    scheduled: dict[date, list[Event]] = {}  # events of a later month's payments: refunds, cash applications
    refunds_seen = 0
    derived_payments = 0
    phases: list[tuple[str, list[Event]]] = []
    remit_seq = 0

    for mi in range(months):
        month = _add_months(start, mi)
        month_end = last_day(month)
        setup: list[Event] = []
        bills: list[Event] = []
        payments: list[Event] = []

        if mi == 0 or month == renewal:
            for plan_id, (_line, totals, _pct) in PLANS.items():
                for tier in totals:
                    total, ee, er = _rate(plan_id, tier, month, renewal)
                    setup.append(RatePublished(
                        event_id=eid("rate"), account_id=BROADCAST_ACCOUNT, effective_on=month,
                        occurred_at=at(month - timedelta(days=20)), source="rates-admin",
                        rate_id=f"{plan_id}-{tier}-{month:%Y%m}", plan=plan_id, tier=tier, month_from=month,
                        month_through=None if month >= renewal else last_day(_add_months(renewal, -1)),
                        total_cents=total, employee_cents=ee, employer_cents=er,
                    ))

        def enrollment(p: _Member, prefix: str, action: str, line: str, cov: _Coverage, *, sent_on: date,
                       effective_on: date, begin: date, end: date | None = None,
                       dependent: int | None = None) -> EnrollmentChanged:
            """One EnrollmentChanged of the subscriber, or of dependent number ``dependent``."""
            event_id = eid(prefix)  # ids, then times: the order the seeded generator draws in
            member, relationship, tax_dependent = p.account_id, "self", True
            if dependent is not None:
                member = f"{p.account_id}-D{dependent + 1}"
                relationship = "spouse" if dependent == 0 and cov.tier in ("ESP", "FAM") else "child"
                if dependent == 0 and p.account_id in partner_accounts:
                    relationship, tax_dependent = "domestic_partner", False
            return EnrollmentChanged(
                event_id=event_id, account_id=p.account_id, effective_on=effective_on,
                occurred_at=at(sent_on), source="hr-system", member_id=member,
                relationship=relationship, plan=cov.plan, coverage_line=line,  # type: ignore[arg-type]
                tier=cov.tier, action=action, status=p.status,  # type: ignore[arg-type]
                benefit_begin=begin, benefit_end=end, agency_id=p.agency_id, tax_dependent=tax_dependent,
                elected_on=p.elected_on, cobra_start=p.hired if p.status == "cobra" else None,
            )

        hr_sends = {"add": month - timedelta(days=12), "terminate": month - timedelta(days=5),
                    "change": month - timedelta(days=8)}
        for p in people:
            if p.hired == month:
                for line, cov in sorted(p.coverages.items()):
                    setup.append(enrollment(p, "enr", "add", line, cov, sent_on=hr_sends["add"], effective_on=month,
                                            begin=month))
                    if line == "health":
                        setup.extend(
                            enrollment(p, "dep", "add", line, cov, sent_on=hr_sends["add"], effective_on=month,
                                       begin=month, dependent=d)
                            for d in range(p.dependents)
                        )
            if term_month.get(p.account_id) == month and p.terminated_after is None:
                p.terminated_after = ended = month - timedelta(days=1)
                health = p.coverages["health"]
                setup.extend(
                    enrollment(p, "term", "terminate", "health", health, sent_on=hr_sends["terminate"],
                               effective_on=ended, begin=health.begin, end=ended, dependent=d)
                    for d in range(p.dependents)
                )
                setup.extend(
                    enrollment(p, "term", "terminate", line, cov, sent_on=hr_sends["terminate"], effective_on=ended,
                               begin=cov.begin, end=ended)
                    for line, cov in sorted(p.coverages.items())
                )
            change = tier_change.get(p.account_id)
            if change is not None and change[0] == month:
                for line, cov in sorted(p.coverages.items()):
                    cov.tier = change[1]
                    setup.append(enrollment(p, "chg", "change", line, cov, sent_on=hr_sends["change"],
                                            effective_on=month, begin=month))

        # Billing and payments for the month.
        late: list[Event] = []  # retroactive changes, reported after the month's payments
        agency_trace = {a: f"TRN{month:%Y%m}{a[-3:]}{rng.randrange(10**6):06d}" for a in agencies}
        for p in people:
            if p.hired > month:
                continue
            inject = injections.get((p.account_id, month))
            terminated = p.terminated_after is not None and p.terminated_after < month
            if inject == "enrolled_not_billed":
                # billing missed this member for the month; payroll follows billing and deducts nothing
                expected.add(("enrolled_not_billed", p.account_id, month))
                continue
            billed_total = 0
            if not terminated or inject == "billed_not_enrolled":
                for line, cov in sorted(p.coverages.items()):
                    total, _ee, _er = _rate(cov.plan, cov.tier, month, renewal)
                    amount = _cobra_premium(total, rules) if p.status == "cobra" else total
                    if inject == "wrong_rate" and line == "health":
                        # billing kept last period's rate, or the wrong tier
                        amount = total + rng.choice([-1, 1]) * rng.randrange(1_500, 9_000)
                        expected.add(("wrong_rate", p.account_id, month))
                    bills.append(PremiumBilled(
                        event_id=eid("bill"), account_id=p.account_id, effective_on=month,
                        occurred_at=at(month - timedelta(days=15)), source="billing-system",
                        bill_id=f"B{month:%Y%m}-{p.account_id}-{line}", coverage_month=month, plan=cov.plan,
                        tier=cov.tier, amount_cents=amount, due_on=month, agency_id=None if p.direct_pay
                        else p.agency_id,
                    ))
                    billed_total += amount
            if inject == "billed_not_enrolled":
                # the termination reached enrollment but not billing; payroll pays the bill as sent
                expected.add(("billed_not_enrolled", p.account_id, month))
            pay = billed_total
            if inject == "missing_payment":
                expected.add(("missing_payment", p.account_id, month))
                continue
            if inject == "underpaid":
                pay -= rng.randrange(2_000, 30_000)
                expected.add(("underpaid", p.account_id, month))
            elif inject in ("overpaid", "refund_due"):
                pay += rng.randrange(2_000, 30_000)
                expected.add(("overpaid", p.account_id, month))
                if inject == "refund_due":
                    # the coverage then ends with this month: the credit can pay no later premium, so the
                    # overpayment becomes a refund due when the termination arrives
                    expected.add(("refund_due", p.account_id, month))
                    statuses[("overpaid", p.account_id, month)] = ["resolved"]
                    statuses[("refund_due", p.account_id, month)] = _refund(
                        p, month, pay - billed_total, refunds_seen, scheduled, eid, at)
                    refunds_seen += 1
            elif inject == "cobra_shortfall":
                # the COBRA member pays a little short: no more than the lesser of $50 and 10% of the
                # premium, so it counts as paid and the member gets a notice (26 CFR 54.4980B-8)
                limit = min(rules.cobra_shortfall_max_cents, billed_total * rules.cobra_shortfall_max_percent // 100)
                if limit > 0:  # a plan may set no allowance at all: then the member pays in full
                    pay -= rng.randint(max(1, limit // 10), limit)
                    expected.add(("cobra_shortfall", p.account_id, month))
            elif inject == "paid_after_termination":
                # payroll kept deducting after the termination
                pay = sum(_rate(c.plan, c.tier, month, renewal)[0] for c in p.coverages.values())
                expected.add(("paid_after_termination", p.account_id, month))
            if pay <= 0 or (terminated and inject not in ("billed_not_enrolled", "paid_after_termination")):
                continue
            payer = p.account_id if p.direct_pay else p.agency_id
            trace = f"DIR{month:%Y%m}{p.account_id}" if p.direct_pay else agency_trace[p.agency_id]
            remit_seq += 1
            typo = misdirected.get((p.account_id, month))
            if typo is not None:
                # the line names an account nobody knows; the member's month stays unpaid until the cash
                # is applied to it (two months on, after its grace period ran out)
                for found in (("unmatched_payment", typo, month), ("missing_payment", p.account_id, month)):
                    expected.add(found)
                    statuses[found] = ["resolved"]
                applied_on = _add_months(month, 2) + timedelta(days=9)
                scheduled.setdefault(_add_months(month, 2), []).append(CashApplied(
                    event_id=eid("apply"), account_id=typo, effective_on=applied_on,
                    occurred_at=at(applied_on, 11), source="accounts-staff", application_id=f"CA{month:%Y%m}-{typo}",
                    payment_id=f"P{month:%Y%m}-{typo}", to_account_id=p.account_id, to_coverage_month=month,
                    amount_cents=pay, reason=f"member id {typo} keyed with a digit too many: {p.account_id}",
                ))
                derived_payments += 1
            line_event = PaymentReceived(
                event_id=eid("pay"), account_id=typo or p.account_id, effective_on=month + timedelta(days=4),
                occurred_at=at(month + timedelta(days=4), 14), source="bank-820" if not p.direct_pay
                else "member-portal", payment_id=f"P{month:%Y%m}-{typo or p.account_id}",
                coverage_month=month, amount_cents=pay, method="direct" if p.direct_pay else "payroll",
                payer_id=payer, remittance_id=None if p.direct_pay else f"R{month:%Y%m}-{p.agency_id}",
                trace_number=trace, tax_treatment=None if p.direct_pay else (
                    # a non-dependent partner's share is post-tax; the injected error takes it pre-tax
                    "post_tax" if p.account_id in partner_accounts and inject != "tax_treatment" else "pre_tax"
                ),
            )
            if inject == "tax_treatment":
                expected.add(("tax_treatment", p.account_id, month))
            payments.append(line_event)
            if inject == "duplicate_payment":
                # the same remittance line arrives again under a new id
                payments.append(PaymentReceived(
                    event_id=eid("pay"), account_id=p.account_id, effective_on=line_event.effective_on,
                    occurred_at=at(month + timedelta(days=6), 15), source=line_event.source,
                    payment_id=f"P{month:%Y%m}-{p.account_id}-resent", coverage_month=month, amount_cents=pay,
                    method=line_event.method, payer_id=payer, remittance_id=line_event.remittance_id,
                    trace_number=trace,
                ))
                expected.add(("duplicate_payment", p.account_id, month))
            if inject == "retroactive_change":
                # After the month was billed and paid, HR reports that coverage ended with last month.
                p.terminated_after = ended = month - timedelta(days=1)
                reported = month + timedelta(days=20)
                health = p.coverages["health"]
                late.extend(
                    enrollment(p, "term", "terminate", "health", health, sent_on=reported, effective_on=ended,
                               begin=health.begin, end=ended, dependent=d)
                    for d in range(p.dependents)
                )
                late.extend(
                    enrollment(p, "term", "terminate", line, cov, sent_on=reported, effective_on=ended,
                               begin=cov.begin, end=ended)
                    for line, cov in sorted(p.coverages.items())
                )
                expected.add(("retroactive_change", p.account_id, month))

        # Payments for people nobody knows: unapplied cash on the agency's account.
        if mi % max(1, months // per_kind) == 0 or mi == months - 1:
            for _ in range(max(1, per_kind // months + 1)):
                stranger = f"X{seed % 100:02d}{mi:02d}{rng.randrange(10**4):04d}{len(expected):05d}"
                agency = rng.choice(agencies)
                payments.append(PaymentReceived(
                    event_id=eid("pay"), account_id=stranger, effective_on=month + timedelta(days=4),
                    occurred_at=at(month + timedelta(days=4), 14), source="bank-820",
                    payment_id=f"P{month:%Y%m}-{stranger}", coverage_month=month,
                    amount_cents=rng.randrange(5_000, 200_000), method="payroll", payer_id=agency,
                    remittance_id=f"R{month:%Y%m}-{agency}", trace_number=agency_trace[agency],
                ))
                expected.add(("unmatched_payment", stranger, month))

        # One remittance per agency: the payment (BPR02) and the sum of its lines (RMR04).
        for agency in agencies:
            remittance_id = f"R{month:%Y%m}-{agency}"
            lines = [e for e in payments if isinstance(e, PaymentReceived) and e.remittance_id == remittance_id]
            if not lines:
                continue
            lines_total = sum(e.amount_cents for e in lines)
            total = lines_total + (rng.randrange(1_000, 50_000) if (agency, month) in remit_errors else 0)
            if total != lines_total:
                expected.add(("remittance_total_mismatch", f"payer:{agency}", None))
            paid_on = month + timedelta(days=4)
            payments.append(RemittanceReceived(
                event_id=eid("remit"), account_id=f"payer:{agency}", effective_on=paid_on,
                occurred_at=at(paid_on, 16), source="bank-820", remittance_id=remittance_id, payer_id=agency,
                method="ach", payment_date=paid_on, trace_number=agency_trace[agency], total_cents=total,
                lines_total_cents=lines_total, line_count=len(lines),
            ))
        payments.extend(scheduled.pop(month, []))
        payments.extend(late)
        bills.append(BillingCycleClosed(
            event_id=eid("cycle"), account_id=BROADCAST_ACCOUNT, effective_on=month,
            occurred_at=at(month - timedelta(days=1), 22), source="billing-system", cycle_month=month,
        ))
        close = DayClosed(
            event_id=eid("day"), account_id=BROADCAST_ACCOUNT, effective_on=month_end,
            occurred_at=at(month_end, 23), source="operations", business_date=month_end,
        )
        phases += [(f"{month:%Y-%m} rates and enrollment", setup), (f"{month:%Y-%m} billing", bills),
                   (f"{month:%Y-%m} payments", payments),
                   (f"{month:%Y-%m} flexible spending accounts", fsa_by_month.get(month, [])),
                   (f"{month:%Y-%m} day close", [close])]

    # One last business day after every grace period has run out.
    final_day = _add_months(start, months) + timedelta(days=45)
    phases.append(("final day close", [DayClosed(
        event_id=eid("day"), account_id=BROADCAST_ACCOUNT, effective_on=final_day,
        occurred_at=at(final_day, 23), source="operations", business_date=final_day,
    )]))

    # A few things upstream systems really do: resend events unchanged, send garbage.
    # Resends repeat payments already published (before the middle phase, where the demo sends them).
    all_payments = [e for name, evs in phases[: len(phases) // 2] if name.endswith("payments") for e in evs]
    program = Program(phases=phases, expected=expected, members=sum(1 + p.dependents for p in people),
                      accounts=len(people), months=months, claims=claims, derived_payments=derived_payments)
    program.expected_rows = Counter(
        (*found, status) for found in expected for status in statuses.get(found, ["open"]))
    program.exact_duplicates = rng.sample(all_payments, k=min(5, len(all_payments)))
    program.raw_records = [
        ("payments", b"M-garbage", b"{not json"),
        ("billing", b"M-garbage", b'{"type":"premium_billed","event_id":"bad-1","account_id":"M-garbage"}'),
        ("payments", b"M-garbage", b'{"type":"no_such_event","event_id":"bad-2","account_id":"M-garbage"}'),
    ]
    return program


# ---------------------------------------------------------------------------------------------
# Running the demo on a live stack (side effects from here on)

DEMO_DATABASE = "benefits_ledger_demo"


@dataclass(frozen=True)
class Judgement:
    """What the ledger recorded, compared with what the program injected."""

    missed: int  # expected discrepancy rows (kind, account, month) not recorded
    spurious: int  # recorded rows not expected, a second row for a finding included
    status_mismatched: int  # rows recorded for the right finding that ended open / resolved where not expected
    claims_adjudicated: int  # claims of the program with an adjudication
    claims_by_decision: dict[str, int]
    claims_mismatched: int  # claims with no adjudication, or another decision or approved amount than expected
    missed_examples: list[str]
    spurious_examples: list[str]
    mismatch_examples: list[str]


def judge(program: Program, rows: list[tuple[str, str, date | None, str]],
          adjudications: list[FsaClaimAdjudicated]) -> Judgement:
    """``rows``: every discrepancy row as (kind, account_id, coverage_month, status); ``adjudications``:
    the FSA claim decisions read back (a re-published copy of one counts once)."""
    def text(t: tuple[object, ...]) -> str:
        return " ".join(map(str, t))

    want, got = program.expected_findings(), Counter(r[:3] for r in rows)
    missed, spurious = want - got, got - want
    # expected rows not recorded: those of a missed finding, and those recorded in another status
    unmatched_rows = program.expected_rows - Counter(rows)
    status_mismatched = sum(unmatched_rows.values()) - sum(missed.values())
    wrong_status = sorted((r for r in unmatched_rows if r[:3] not in missed), key=str)
    decided = {a.claim_id: a for a in adjudications if a.claim_id in program.claims}
    claim_mismatches = []
    for claim_id, want_claim in sorted(program.claims.items()):
        a = decided.get(claim_id)
        if a is None:
            claim_mismatches.append(f"claim {claim_id} ({want_claim.why}): no adjudication")
        elif (a.account_id, a.decision, a.approved_cents, a.requested_cents) != (
                want_claim.account_id, want_claim.decision, want_claim.approved_cents, want_claim.requested_cents):
            claim_mismatches.append(
                f"claim {claim_id} ({want_claim.why}): expected {want_claim.decision} {want_claim.approved_cents},"
                f" got {a.decision} {a.approved_cents} ({a.reason})")
    by_decision = Counter[str](a.decision for a in decided.values())
    return Judgement(
        missed=sum(missed.values()), spurious=sum(spurious.values()), status_mismatched=status_mismatched,
        claims_adjudicated=len(decided), claims_by_decision={d: by_decision[d] for d in CLAIM_DECISIONS},
        claims_mismatched=len(claim_mismatches),
        missed_examples=[text(m) for m in sorted(missed, key=str)[:10]],
        spurious_examples=[text(x) for x in sorted(spurious, key=str)[:10]],
        mismatch_examples=([f"expected {text(r)}" for r in wrong_status[:10]] + claim_mismatches[:10]),
    )


def read_claims(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[FsaClaimAdjudicated]:
    """Every adjudication on the claims topic, read from the beginning to the high-water mark of each
    partition as a fetch reports it (Tansu's end_offsets is not reliable)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        deadline = _time.monotonic() + timeout_s
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            if _time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} has no partitions")
            _time.sleep(0.2)
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[FsaClaimAdjudicated] = []
        while True:
            if _time.monotonic() > deadline:
                raise RuntimeError(f"reading {topic} did not reach its end in {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=500, max_records=20_000).values():
                for r in records:
                    event = codec.decode_output(r.value)
                    if isinstance(event, FsaClaimAdjudicated):
                        out.append(event)
            highwater = [consumer.highwater(tp) for tp in tps]
            if all(hw is not None and consumer.position(tp) >= hw for tp, hw in zip(tps, highwater, strict=True)):
                return out
    finally:
        consumer.close()



@dataclass
class DemoReport:
    members: int
    accounts: int
    months: int
    events_generated: int
    events_published: int
    events_applied: int
    events_duplicate: int
    events_dead_lettered: int
    events_derived: int  # payments the ledger posted itself (cash applied): received = published + derived
    discrepancies_expected: int
    discrepancies_detected: int
    missed: int
    spurious: int
    missed_examples: list[str]
    spurious_examples: list[str]
    discrepancies_by_kind: dict[str, int]
    discrepancies_by_status: dict[str, int]
    status_mismatched: int
    discrepancy_events_published: int
    claims_expected: int
    claims_adjudicated: int
    claims_by_decision: dict[str, int]
    claims_mismatched: int
    mismatch_examples: list[str]
    cash_applications: int
    refunds_issued: int
    refunds_returned: int
    coverage_months: int
    billed_cents: int
    paid_cents: int
    outstanding_cents: int
    credits_cents: int
    unapplied_cents: int
    counts_add_up: bool
    events_per_second: float
    elapsed_seconds: float
    database: str

    def ok(self) -> bool:
        return (self.missed == 0 and self.spurious == 0 and self.status_mismatched == 0
                and self.claims_mismatched == 0 and self.counts_add_up)


STALL_S = 60.0  # publishing done, nothing received and nothing left in the outbox for this long: give up


async def run_program(ledger: Any, program: Program, progress: Callable[[int], None] | None = None) -> int:
    """Publish the whole program as upstream systems would (in business order, without waiting) and
    wait until the processor has taken every record, the payments the ledger posts itself included,
    and the relay has drained the outbox. Returns the records published.

    The processor folds the input topics of a partition in timestamp order (processor/merge.py), so
    bills never overtake the enrollment they depend on, nor a business day the payments before it. A
    payment the ledger derives from a cash application is published by the relay once the application is
    folded, so it may come after later records of the program: the program is built so that its outcome
    does not depend on where it lands.
    """
    topics = ledger.settings.topics
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(ledger, stop))
    watcher = ledger.store()
    publisher = ledger.publisher()

    def publish_all() -> None:
        for i, (_name, events) in enumerate(program.phases):
            extra = program.exact_duplicates if i == len(program.phases) // 2 else []
            publisher.publish([*events, *extra])
            if i == 1:
                for topic_key, key, value in program.raw_records:
                    publisher.send_raw(getattr(topics, topic_key), value=value, key=key)
        publisher.flush()

    def check() -> None:
        if services.done():
            services.result()  # re-raise the processor's error
            raise RuntimeError("the processor stopped before catching up")

    try:
        sending = asyncio.create_task(asyncio.to_thread(publish_all))
        last, since = -1, _time.monotonic()
        while True:
            check()
            received = (await asyncio.to_thread(watcher.counts)).received
            if progress is not None:
                progress(received)
            if sending.done():
                sending.result()
                wanted = publisher.records_sent + program.derived_payments
                if received >= wanted:
                    break
                if received != last:
                    last, since = received, _time.monotonic()
                elif _time.monotonic() - since > STALL_S and not await asyncio.to_thread(watcher.outbox_pending, 1):
                    raise RuntimeError(f"received {received} of {wanted} records ({publisher.records_sent} published,"
                                       f" {program.derived_payments} posted by the ledger) and nothing moved for"
                                       f" {STALL_S:.0f} s")
            await asyncio.sleep(0.05)
        while await asyncio.to_thread(watcher.outbox_pending, 1):
            check()
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await services
        publisher.close()
    return publisher.records_sent


def run_demo(
    settings: Any, *, members: int, months: int, seed: int,
    progress: Callable[[int], None] | None = None, on_start: Callable[[Program], None] | None = None,
    then: Callable[[Any, DemoReport], None] | None = None,
) -> DemoReport:
    """Generate, publish, fold and compare with what was injected; everything started is stopped.
    ``then`` runs with the ledger and the report before the stack stops (``demo --serve`` serves there)."""
    from processor.app import open_ledger  # the composition root

    program = generate(members, months, seed, plan=settings.plan)
    if on_start is not None:
        on_start(program)
    with open_ledger(settings, database=DEMO_DATABASE, reset_database=True) as ledger:
        started = _time.perf_counter()
        published = asyncio.run(run_program(ledger, program, progress))
        elapsed = _time.perf_counter() - started
        store = ledger.store()
        summary = store.summary()
        rows = store.discrepancies(limit=10**9)
        adjudications = read_claims(ledger.bootstrap, ledger.settings.topics.claims)
        verdict = judge(program, [(d.kind, d.account_id, d.coverage_month, d.status) for d in rows], adjudications)
        counts = summary.counts
        events = [e for _, phase in program.phases for e in phase]
        report = DemoReport(
            members=summary.members, accounts=summary.accounts, months=months,
            events_generated=program.events, events_published=published,
            events_applied=counts.applied, events_duplicate=counts.duplicates,
            events_dead_lettered=counts.dead_lettered, events_derived=program.derived_payments,
            discrepancies_expected=sum(program.expected_rows.values()), discrepancies_detected=len(rows),
            missed=verdict.missed, spurious=verdict.spurious,
            missed_examples=verdict.missed_examples, spurious_examples=verdict.spurious_examples,
            discrepancies_by_kind=dict(summary.discrepancies_opened_by_kind),
            discrepancies_by_status=dict(sorted(Counter(d.status for d in rows).items())),
            status_mismatched=verdict.status_mismatched,
            # the outbox is drained before the report: every opened and resolved event was published
            discrepancy_events_published=len(rows) + sum(1 for d in rows if d.status == "resolved"),
            claims_expected=len(program.claims), claims_adjudicated=verdict.claims_adjudicated,
            claims_by_decision=verdict.claims_by_decision, claims_mismatched=verdict.claims_mismatched,
            mismatch_examples=verdict.mismatch_examples,
            cash_applications=sum(1 for e in events if isinstance(e, CashApplied)),
            refunds_issued=sum(1 for e in events if isinstance(e, RefundIssued)),
            refunds_returned=sum(1 for e in events if isinstance(e, RefundReturned)),
            coverage_months=summary.coverage_months, billed_cents=summary.billed_cents,
            paid_cents=summary.paid_cents, outstanding_cents=summary.outstanding_cents,
            credits_cents=summary.credits_cents, unapplied_cents=summary.unapplied_cents,
            counts_add_up=counts.received == published + program.derived_payments
            and counts.received == counts.applied + counts.duplicates + counts.dead_lettered,
            events_per_second=round(published / elapsed, 1), elapsed_seconds=round(elapsed, 2),
            database=DEMO_DATABASE,
        )
        if then is not None:
            then(ledger, report)
    return report

