"""The flexible spending accounts of the program: elections, payroll contributions and claims, each
claim decided by the generator's own model of the FSA rules (``FsaYear``), from DOMAIN.md and the
README ("Flexible spending accounts"), never from the ledger's FSA rules."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from events.types import Event, FsaClaimSubmitted, FsaContributionReceived, FsaElectionMade
from processor.entrypoints.demo.model import add_months
from processor.entrypoints.demo.records import Adjudication, ExpectedClaim, Member
from processor.settings import FsaSettings


@dataclass
class FsaYear:
    """The generator's own model of one FSA of one plan year, from the rules in DOMAIN.md and README
    ("Flexible spending accounts"), independent of the ledger's FSA rules: health FSA, uniform
    coverage (the whole election from the first day); dependent care, only what has been contributed so
    far, and with the plan's ``dependent_care_pending`` (default) the rest of a claim up to the election
    waits and is paid, oldest claim first, by later contributions."""

    account_type: str
    election_cents: int
    begins: date  # participation start: the first service date it pays for
    through: date  # the last service date it pays for (the plan year's last day, or its grace period's)
    claims_until: date  # the last day a claim may be submitted (the run-out)
    pending_allowed: bool = True  # FsaSettings.dependent_care_pending
    contributed_cents: int = 0
    reimbursed_cents: int = 0
    # claims with a remainder waiting for contributions, oldest first: claim id -> [adjudications so far,
    # cents still pending]
    waiting: dict[str, tuple[list[Adjudication], list[int]]] = field(default_factory=dict)

    def available(self) -> int:
        if self.account_type == "health":
            return self.election_cents - self.reimbursed_cents
        return min(self.contributed_cents, self.election_cents) - self.reimbursed_cents

    def pending(self) -> int:
        return sum(left[0] for _, left in self.waiting.values())

    def decide(self, claim_id: str, year_start: date, service: date, submitted: date, amount: int
               ) -> list[Adjudication]:
        """The adjudications of a claim naming this plan year so far: its decision when submitted (a
        pending remainder is paid by ``contribute``, which appends to the same list)."""
        if not (max(year_start, self.begins) <= service <= min(self.through, submitted)) or (
                submitted > self.claims_until):
            return [("denied", 0, 0)]
        available = self.available()
        if amount <= available:
            self.reimbursed_cents += amount
            return [("approved", amount, 0)]
        paid = max(available, 0)
        pending = 0
        if self.account_type == "dependent_care" and self.pending_allowed:
            # what later contributions may still pay: up to the election not yet reimbursed or promised
            pending = max(0, min(amount, self.election_cents - self.reimbursed_cents - self.pending()) - paid)
        if paid == 0 and pending == 0:
            return [("denied", 0, 0)]
        self.reimbursed_cents += paid
        if pending == 0:
            return [("partially_approved", paid, 0)]
        decided: list[Adjudication] = [("pending" if paid == 0 else "partially_approved", paid, pending)]
        self.waiting[claim_id] = (decided, [pending])
        return decided

    def contribute(self, amount: int) -> None:
        """A payroll contribution; it pays what pending claims it can, oldest first, each payment an
        adjudication of its own (approved once nothing is left pending)."""
        self.contributed_cents += amount
        for claim_id, (decided, left) in list(self.waiting.items()):
            available = self.available()
            if available <= 0:
                return
            pay = min(left[0], available)
            left[0] -= pay
            self.reimbursed_cents += pay
            decided.append(("approved" if left[0] == 0 else "partially_approved", pay, left[0]))
            if left[0] == 0:
                del self.waiting[claim_id]


def fsa_program(
    participants: list[Member], start: date, months: int, per_kind: int, s: FsaSettings, rng: random.Random,
    eid: Callable[[str], str], at: Callable[[date, int], datetime],
) -> tuple[dict[date, list[Event]], dict[str, ExpectedClaim]]:
    """Elections, payroll contributions and claims of the FSA participants in the plan year the program
    starts in (its later months carry no FSA activity), by month, with the expected decision of each claim.

    Most claims fit what is available; on top of them, a few of each: a dependent-care claim beyond what
    has been contributed (partially approved, the rest pending and paid by later contributions), one
    submitted before the first contribution (pending, then paid), a health claim beyond the rest of the
    election followed by one more (partially approved, then denied: nothing left), a claim whose service
    date is before the plan year it names, and one for an expense not yet incurred (both denied)."""
    year = start.year if start.month >= s.plan_year_start_month else start.year - 1
    year_start, next_start = date(year, s.plan_year_start_month, 1), date(year + 1, s.plan_year_start_month, 1)
    year_end = next_start - timedelta(days=1)
    grace_months, grace_days = s.grace_period
    health_through = add_months(next_start, grace_months) + timedelta(days=grace_days - 1) if (
        s.health_year_end == "grace_period") else year_end
    end = add_months(start, months)
    fsa_months = [m for m in (add_months(start, i) for i in range(months)) if year_start <= m <= year_end]
    by_month: dict[date, list[Event]] = {m: [] for m in fsa_months}
    claims: dict[str, ExpectedClaim] = {}
    if not fsa_months:
        return by_month, claims
    decided: dict[str, tuple[str, str, int, str, list[Adjudication]]] = {}  # claim id -> its adjudications

    # Who elects what, and how payroll contributes to it.
    plans: list[tuple[Member, str, int, str | None, date]] = []  # member, account type, election, status, from
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
            dates = [add_months(year_start, k) + timedelta(days=24) for k in range(12)]
        pay_dates[p.account_id] = [d for d in dates if begins <= d <= year_end]

    # The claims that are not ordinary, each on one account in one month.
    n = max(1, per_kind // 4)
    health = [i for i, plan in enumerate(plans) if plan[1] == "health"]
    care = [i for i, plan in enumerate(plans) if plan[1] == "dependent_care"]
    anyone = list(range(len(plans)))
    for pool in (health, care, anyone):
        rng.shuffle(pool)
    special: dict[int, list[str]] = {}
    for why, pool in (("beyond contributions", care), ("before any contribution", care[n:] + care[:n]),
                      ("nothing left", health), ("before the plan year", anyone),
                      ("not yet incurred", anyone[n:] + anyone[:n])):
        for i in pool[:n]:
            special.setdefault(i, []).append(why)
    descriptions = {"health": ["office visit copay", "prescription", "dental cleaning", "eyeglasses",
                               "physical therapy"],
                    "dependent_care": ["day care", "after-school care", "summer day camp"]}

    for i, (p, account_type, election, status, begins) in enumerate(plans):
        code = "H" if account_type == "health" else "D"
        model = FsaYear(account_type, election, begins, health_through if account_type == "health" else year_end,
                        (health_through if account_type == "health" else year_end)
                        + timedelta(days=s.run_out_days), s.dependent_care_pending)
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
        # a claim beyond what has been contributed comes early in the year, so that later contributions
        # are there to pay its remainder
        planned = {why: rng.choice(months_in[:max(1, len(months_in) // 2)] if why == "beyond contributions"
                                   else months_in) for why in special.get(i, [])}
        claim_no = 0
        for m in months_in:
            # (day, 0 contribution / 1 claim, what): contributions first on a day, then claims in order
            todo: list[tuple[date, int, str]] = [(d, 0, "contribution") for d in dates if m <= d < add_months(m, 1)]
            if rng.random() < (0.3 if account_type == "health" else 0.6):
                low = 0 if account_type == "health" else 14  # day care is claimed once the month is billed
                todo.append((m + timedelta(days=rng.randrange(low, 27)), 1, "ordinary"))
            for why, when in planned.items():
                if why == "before any contribution":
                    # between the start of participation and the first pay date, if there is room
                    if m == begins and dates and dates[0] > begins:
                        todo.append((begins + timedelta(days=rng.randrange((dates[0] - begins).days)), 1, why))
                elif when == m:
                    offset = 27 if why == "beyond contributions" else rng.randrange(2, 20)
                    todo.append((m + timedelta(days=offset), 1, why))
            for day, _order, what in sorted(todo, key=lambda t: (t[0], t[1])):
                if what == "contribution":
                    model.contribute(amounts[day])
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
                elif what == "before any contribution":
                    service, amount = begins, rng.randint(5_000, min(election, 100_000))
                elif what == "before the plan year":
                    named_year, service = year, year_start - timedelta(days=rng.randint(1, 25))
                    amount = rng.randint(2_000, 50_000)
                else:  # not yet incurred: next month's day care, this summer's camp
                    service, amount = day + timedelta(days=rng.randint(3, 20)), rng.randint(2_000, 50_000)
                follow_up = [(day + timedelta(days=3), rng.randint(2_000, 20_000))] if what == "nothing left" else []
                for submitted, requested in [(day, amount), *follow_up]:
                    if submitted >= end or submitted > year_end:
                        continue
                    claim_no += 1
                    claim_id = f"FC-{p.account_id}-{code}{claim_no:03d}"
                    decided[claim_id] = (p.account_id, account_type, requested, what,
                                         model.decide(claim_id, year_start, service, submitted, requested))
                    by_month[m].append(FsaClaimSubmitted(
                        event_id=eid("fsa-claim"), account_id=p.account_id, effective_on=submitted,
                        occurred_at=at(submitted, 11), source="fsa-claims-portal", claim_id=claim_id,
                        account_type=account_type, service_date=service,  # type: ignore[arg-type]
                        amount_cents=requested, plan_year=named_year,
                        description=rng.choice(descriptions[account_type]),
                    ))
    for claim_id, (account_id, account_type, requested, why, adjudications) in decided.items():
        claims[claim_id] = ExpectedClaim(account_id, account_type, requested, why, tuple(adjudications))
    return by_month, claims

