"""Flexible spending accounts: elections, payroll contributions and claims. Pure: no I/O, clock or logging.

The rules (DOMAIN.md; limits and plan choices in ``PlanSettings.fsa``):

- An election is checked against the plan's limit (health, dependent care, dependent care married filing
  separately). A later election for the same plan year and account type replaces the earlier one; it may
  not go below what was already reimbursed.
- Health FSA, uniform coverage: available = election + carryover in - approved so far, from the first day.
- Dependent care: available = what has been contributed so far (at most the election) - reimbursed so far.
- A claim's expense must be incurred (service date) within the plan year, or within its grace period when
  the plan has one (health only), on or after participation began, and not after the claim was submitted.
- A claim must be submitted (its ``effective_on``: the day the plan received it, never the wall clock) no
  later than ``run_out_days`` after the last day expenses of its plan year may be incurred.
- Carryover (health, ``health_year_end = "carryover"``): a plan year closes on the first business day
  (``DayClosed``) or FSA event of the account dated (``effective_on``) after its run-out deadline; its
  unused balance, up to ``health_carryover_max_cents``, then becomes available in the next plan year and the
  rest is forfeited.
  Closing depends only on folded events, so live processing and replay agree. A claim for a closed year
  is denied.
- Participation ends when employment ends (an 834 termination of the member's ``fsa`` or ``dcap``
  coverage line): an expense incurred after it is denied, the run-out counts from it, and an unused
  health balance is forfeited rather than carried over. A health FSA continued under COBRA (when the plan
  allows it, ``health_cobra_continuation``) or a reinstatement goes on as before.
- Dependent care (``dependent_care_pending``, default on): a claim beyond what has been contributed is
  paid as far as it can be and its remainder is pending; each later contribution pays pending claims,
  oldest first, each payment an ``fsa_claim_adjudicated`` of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from events.money import format_cents as cents
from events.types import (
    EnrollmentChanged,
    FsaClaimAdjudicated,
    FsaClaimSubmitted,
    FsaContributionReceived,
    FsaElectionMade,
)
from processor.rules.base import LEDGER_SOURCE, Outcome, Rejected
from processor.rules.dates import add_months
from processor.settings import FsaSettings, PlanSettings
from processor.state import AccountState, FsaClaim, FsaState, FsaYear, PartitionState, fsa_key

FsaEvent = FsaElectionMade | FsaContributionReceived | FsaClaimSubmitted

ACCOUNT_NAMES = {"health": "health FSA", "dependent_care": "dependent-care FSA"}


@dataclass(frozen=True, slots=True)
class Adjudication:
    plan_year: int
    decision: str  # approved | partially_approved | denied
    approved_cents: int
    reason: str
    available_before_cents: int
    available_after_cents: int
    pending_cents: int = 0


# ---------------------------------------------------------------------------------------------
# Calendar of a plan year


def plan_year_of(day: date, s: FsaSettings) -> int:
    """Plan years are named by the calendar year they start in."""
    return day.year if day.month >= s.plan_year_start_month else day.year - 1


def plan_year_start(year: int, s: FsaSettings) -> date:
    return date(year, s.plan_year_start_month, 1)


def plan_year_end(year: int, s: FsaSettings) -> date:
    return plan_year_start(year + 1, s) - timedelta(days=1)


def has_grace_period(account_type: str, s: FsaSettings) -> bool:
    return account_type == "health" and s.health_year_end == "grace_period"


def incurred_through(year: int, account_type: str, s: FsaSettings) -> date:
    """The last service date the plan year pays for: its last day, or the end of its grace period."""
    if not has_grace_period(account_type, s):
        return plan_year_end(year, s)
    months, days = s.grace_period
    return add_months(plan_year_start(year + 1, s), months) + timedelta(days=days - 1)


def claim_deadline(year: int, account_type: str, s: FsaSettings) -> date:
    """The last day a claim for the plan year may be submitted: the run-out after ``incurred_through``."""
    return incurred_through(year, account_type, s) + timedelta(days=s.run_out_days)


def election_limit(account_type: str, filing_status: str | None, s: FsaSettings) -> tuple[int, str]:
    """The largest election and the setting that sets it."""
    if account_type == "health":
        return s.health_limit_cents, "fsa.health_limit_cents"
    if filing_status == "married_filing_separately":
        return s.dependent_care_mfs_limit_cents, "fsa.dependent_care_mfs_limit_cents"
    return s.dependent_care_limit_cents, "fsa.dependent_care_limit_cents"


def available_cents(y: FsaYear) -> int:
    """What a claim may still be paid from this account now."""
    if y.closed:
        return 0
    if y.account_type == "health":
        return y.election_cents + y.carryover_in_cents - y.reimbursed_cents
    return min(y.contributed_cents, y.election_cents) - y.reimbursed_cents


# ---------------------------------------------------------------------------------------------
# Adjudication


def claim_plan_year(claim: FsaClaimSubmitted, fsa: FsaState | None, s: FsaSettings) -> int:
    """The claim's own plan year, else the plan year of its service date. A service date in the grace
    period of the prior year is paid from the prior year first while that year still has a balance."""
    if claim.plan_year is not None:
        return claim.plan_year
    year = plan_year_of(claim.service_date, s)
    if has_grace_period(claim.account_type, s) and fsa is not None:
        prior = fsa.years.get(fsa_key(year - 1, claim.account_type))
        if (
            prior is not None and available_cents(prior) > 0
            and claim.service_date <= incurred_through(year - 1, claim.account_type, s)
            and claim.effective_on <= claim_deadline(year - 1, claim.account_type, s)
        ):
            return year - 1
    return year


def submission_deadline(year: int, account_type: str, s: FsaSettings, ended: date | None) -> date:
    """The last day a claim for the plan year may be submitted: the run-out after the plan year, or
    after participation ended when employment ended first."""
    deadline = claim_deadline(year, account_type, s)
    if ended is not None and ended < incurred_through(year, account_type, s):
        deadline = min(deadline, ended + timedelta(days=s.run_out_days))
    return deadline


def adjudicate(claim: FsaClaimSubmitted, year: int, account: FsaYear | None, s: FsaSettings,
               ended: date | None = None) -> Adjudication:
    """Decide one claim against its plan year's account as it stands (None: no such account);
    ``ended``: the last day of participation, when employment ended."""
    kind = ACCOUNT_NAMES[claim.account_type]
    before = available_cents(account) if account is not None else 0

    def denied(reason: str) -> Adjudication:
        return Adjudication(year, "denied", 0, reason, before, before)

    if account is None or (not account.elected and account.carryover_in_cents == 0):
        return denied(f"no {kind} election for plan year {year}")
    start, through = plan_year_start(year, s), incurred_through(year, claim.account_type, s)
    if claim.service_date < start:
        return denied(f"service date {claim.service_date} is before plan year {year} began on {start}")
    if claim.service_date > through:
        period = f"the grace period of plan year {year}" if has_grace_period(claim.account_type, s) else (
            f"plan year {year}")
        return denied(f"service date {claim.service_date} is after {period} ended on {through}")
    if account.participation_from is not None and claim.service_date < account.participation_from:
        return denied(f"service date {claim.service_date} is before participation began on"
                      f" {account.participation_from}")
    if ended is not None and claim.service_date > ended:
        return denied(f"service date {claim.service_date} is after participation ended on {ended}"
                      " (employment ended)")
    if claim.service_date > claim.effective_on:
        return denied(f"service date {claim.service_date} is after the claim was submitted on"
                      f" {claim.effective_on}: expenses are reimbursed once incurred")
    deadline = submission_deadline(year, claim.account_type, s, ended)
    if claim.effective_on > deadline:
        after = through if deadline == claim_deadline(year, claim.account_type, s) else ended
        return denied(f"submitted {claim.effective_on}, after the run-out period for plan year {year} ended on"
                      f" {deadline} ({s.run_out_days} days after {after})")
    if account.closed:
        return denied(f"plan year {year} is closed: its unused balance was carried over or forfeited")
    requested = claim.amount_cents
    if claim.account_type == "health":
        funds = f"{cents(account.election_cents)} election"
        if account.carryover_in_cents:
            funds += f" + {cents(account.carryover_in_cents)} carried over"
        basis = f"{funds}, {cents(account.reimbursed_cents)} already reimbursed"
    else:
        basis = (f"dependent-care claims are paid up to what has been contributed so far:"
                 f" {cents(account.contributed_cents)} contributed of the {cents(account.election_cents)} election,"
                 f" {cents(account.reimbursed_cents)} already reimbursed")
    if requested <= before:
        return Adjudication(year, "approved", requested, f"approved in full; {cents(before - requested)} remains",
                            before, before - requested)
    pending = 0
    if claim.account_type == "dependent_care" and s.dependent_care_pending:
        # what later contributions may still pay: up to the election not yet reimbursed or promised
        pending = min(requested, account.election_cents - account.reimbursed_cents - account.pending_cents) - max(
            before, 0)
        pending = max(pending, 0)
    if before <= 0 and pending == 0:
        return denied(f"nothing available in the {kind} for {year} ({basis})")
    paid = max(before, 0)
    if pending:
        decision = "pending" if paid == 0 else "partially_approved"
        return Adjudication(
            year, decision, paid,
            f"{cents(paid)} of {cents(requested)} paid now, {cents(pending)} pending: dependent-care claims are"
            f" paid as contributions arrive ({basis})"
            + (f"; {cents(requested - paid - pending)} is beyond the election" if requested > paid + pending else ""),
            before, before - paid, pending,
        )
    return Adjudication(
        year, "partially_approved", before,
        f"{cents(before)} of {cents(requested)} approved: only {cents(before)} available ({basis})",
        before, 0,
    )


# ---------------------------------------------------------------------------------------------
# The fold of FSA events


def on_fsa_event(account: AccountState, part: PartitionState, event: FsaEvent, plan: PlanSettings) -> Outcome:
    """Fold one FSA event. Raises Rejected before changing anything if it cannot apply."""
    out = Outcome()
    s = plan.fsa
    fsa = account.fsa
    if isinstance(event, FsaElectionMade):
        _check_election(fsa, event, s)
    elif isinstance(event, FsaContributionReceived):
        _check_contribution(fsa, event, s)
    else:
        _check_claim(fsa, event)
    if fsa is None:
        fsa = account.fsa = FsaState()
    settle(fsa, event.effective_on, s)
    out.fsa_changed = True
    if isinstance(event, FsaElectionMade):
        year = _year(fsa, event.plan_year, event.account_type, event.member_id)
        first_day = max(event.effective_on, plan_year_start(event.plan_year, s))
        if year.participation_from is None or first_day < year.participation_from:
            year.participation_from = first_day
        year.election_cents = event.election_cents
        year.elected = True
        year.election_event_id = event.event_id
        year.member_id = event.member_id
        year.tax_filing_status = event.tax_filing_status
        fsa.election_ids[event.election_id] = event.event_id
    elif isinstance(event, FsaContributionReceived):
        year = fsa.years[fsa_key(event.plan_year, event.account_type)]
        year.contributed_cents += event.amount_cents
        fsa.contribution_ids[event.contribution_id] = event.event_id
        if year.pending_cents:
            _pay_pending(account, fsa, year, event, out)
    else:
        year_no = claim_plan_year(event, fsa, s)
        found = fsa.years.get(fsa_key(year_no, event.account_type))
        decision = adjudicate(event, year_no, found, s, fsa.ended.get(event.account_type))
        if found is not None:
            found.reimbursed_cents += decision.approved_cents
            found.pending_cents += decision.pending_cents
        fsa.claims[event.claim_id] = FsaClaim(
            claim_id=event.claim_id, event_id=event.event_id, plan_year=year_no, account_type=event.account_type,
            requested_cents=event.amount_cents, approved_cents=decision.approved_cents, decision=decision.decision,
            service_date=event.service_date, submitted_on=event.effective_on, reason=decision.reason,
            pending_cents=decision.pending_cents,
        )
        out.emitted.append(FsaClaimAdjudicated(
            event_id=f"{event.event_id}:adjudicated", account_id=account.account_id,
            effective_on=event.effective_on, occurred_at=event.occurred_at, source=LEDGER_SOURCE,
            causation_id=event.event_id, claim_id=event.claim_id, account_type=event.account_type,
            plan_year=year_no, decision=decision.decision,  # type: ignore[arg-type]
            requested_cents=event.amount_cents, approved_cents=decision.approved_cents, reason=decision.reason,
            available_before_cents=decision.available_before_cents,
            available_after_cents=decision.available_after_cents, pending_cents=decision.pending_cents,
        ))
    return out


def _pay_pending(account: AccountState, fsa: FsaState, year: FsaYear, e: FsaContributionReceived,
                 out: Outcome) -> None:
    """A contribution pays the year's pending dependent-care claims, oldest first, as far as it goes."""
    for claim in fsa.claims.values():
        available = available_cents(year)
        if available <= 0:
            return
        if claim.pending_cents == 0 or (claim.plan_year, claim.account_type) != (year.plan_year, year.account_type):
            continue
        pay = min(claim.pending_cents, available)
        claim.pending_cents -= pay
        claim.approved_cents += pay
        claim.decision = "approved" if claim.pending_cents == 0 else "partially_approved"
        year.pending_cents -= pay
        year.reimbursed_cents += pay
        out.emitted.append(FsaClaimAdjudicated(
            event_id=f"{e.event_id}:pays:{claim.claim_id}", account_id=account.account_id,
            effective_on=e.effective_on, occurred_at=e.occurred_at, source=LEDGER_SOURCE, causation_id=e.event_id,
            claim_id=claim.claim_id, account_type=claim.account_type,  # type: ignore[arg-type]
            plan_year=claim.plan_year, decision=claim.decision,  # type: ignore[arg-type]
            requested_cents=claim.requested_cents, approved_cents=pay,
            reason=f"{cents(pay)} of the pending claim paid from the contribution of {e.effective_on}"
            + (f"; {cents(claim.pending_cents)} still pending" if claim.pending_cents else "; paid in full"),
            available_before_cents=available, available_after_cents=available - pay,
            pending_cents=claim.pending_cents,
        ))


LINE_ACCOUNT_TYPE = {"fsa": "health", "dcap": "dependent_care"}


def has_account(account: AccountState, line: str) -> bool:
    """Does the member have a flexible spending account of the type this coverage line enrolls in?"""
    account_type = LINE_ACCOUNT_TYPE.get(line)
    return account_type is not None and account.fsa is not None and any(
        y.account_type == account_type for y in account.fsa.years.values())


def note_participation(account: AccountState, e: EnrollmentChanged, plan: PlanSettings) -> bool:
    """An 834 change of the member's fsa or dcap coverage line: a termination ends participation (the
    last day of employment), a reinstatement or, where the plan allows it, a COBRA continuation of the
    health FSA keeps it going. Returns whether the flexible spending accounts moved."""
    account_type = LINE_ACCOUNT_TYPE.get(e.coverage_line)
    if account_type is None:
        return False
    fsa = account.fsa
    if fsa is None:
        fsa = account.fsa = FsaState()
    continued = e.status == "cobra" and account_type == "health" and plan.fsa.health_cobra_continuation
    if e.action == "terminate" and not continued:
        fsa.ended[account_type] = e.benefit_end if e.benefit_end is not None else e.benefit_begin
    elif e.action in ("reinstate", "add") or continued:
        fsa.ended.pop(account_type, None)
    else:
        return False
    return True


def fsa_may_close(fsa: FsaState, as_of: date, s: FsaSettings) -> bool:
    """Does ``settle`` close a plan year on this date?"""
    return any(not y.closed and as_of > claim_deadline(y.plan_year, y.account_type, s) for y in fsa.years.values())


def closable_through(as_of: date, s: FsaSettings) -> int:
    """The latest plan year that a day may close: a superset (the earliest deadline of any account type),
    so a store query for open years up to it finds every account ``fsa_may_close`` would."""
    year = plan_year_of(as_of, s)
    while as_of <= min(claim_deadline(year, t, s) for t in ACCOUNT_NAMES):
        year -= 1
    return year


def settle(fsa: FsaState, as_of: date, s: FsaSettings) -> None:
    """Close, oldest first, every plan year whose run-out ended before ``as_of``; a health year's unused
    balance up to the carryover limit moves to the next year (which may then close too)."""
    while True:
        due = [(y.plan_year, k) for k, y in fsa.years.items()
               if not y.closed and as_of > claim_deadline(y.plan_year, y.account_type, s)]
        if not due:
            return
        y = fsa.years[min(due)[1]]
        unused = available_cents(y)
        y.closed = True
        ended = fsa.ended.get(y.account_type)
        if ended is not None and ended < plan_year_start(y.plan_year + 1, s):
            continue  # participation ended: the unused balance is forfeited, nothing carries over
        if y.account_type == "health" and s.health_year_end == "carryover":
            carry = min(unused, s.carryover_max_cents)
            if carry > 0:
                nxt = _year(fsa, y.plan_year + 1, "health", y.member_id)
                nxt.carryover_in_cents += carry
                y.carryover_out_cents = carry


def _year(fsa: FsaState, plan_year: int, account_type: str, member_id: str) -> FsaYear:
    key = fsa_key(plan_year, account_type)
    year = fsa.years.get(key)
    if year is None:
        year = fsa.years[key] = FsaYear(plan_year=plan_year, account_type=account_type, member_id=member_id)
    return year


def _check_not_over(plan_year: int, account_type: str, on: date, s: FsaSettings, what: str) -> None:
    deadline = claim_deadline(plan_year, account_type, s)
    if on > deadline:
        raise Rejected(f"{what} for plan year {plan_year} dated {on}: the plan year and its run-out ended on"
                       f" {deadline}", field="plan_year")


def _check_election(fsa: FsaState | None, e: FsaElectionMade, s: FsaSettings) -> None:
    if fsa is not None and e.election_id in fsa.election_ids:
        raise Rejected(f"election {e.election_id} is already recorded under event {fsa.election_ids[e.election_id]}",
                       field="election_id")
    limit, setting = election_limit(e.account_type, e.tax_filing_status, s)
    if e.election_cents > limit:
        status = " (married filing separately)" if setting.endswith("mfs_limit_cents") else ""
        raise Rejected(f"election {cents(e.election_cents)} exceeds the plan's {ACCOUNT_NAMES[e.account_type]}"
                       f" limit of {cents(limit)}{status} ({setting})", field="election_cents")
    _check_not_over(e.plan_year, e.account_type, e.effective_on, s, "an election")
    current = fsa.years.get(fsa_key(e.plan_year, e.account_type)) if fsa is not None else None
    if current is not None:
        if current.closed:
            raise Rejected(f"plan year {e.plan_year} is closed", field="plan_year")
        if e.election_cents < current.reimbursed_cents:
            raise Rejected(f"election {cents(e.election_cents)} is below the {cents(current.reimbursed_cents)}"
                           f" already reimbursed from the {ACCOUNT_NAMES[e.account_type]} for {e.plan_year}",
                           field="election_cents")


def _check_contribution(fsa: FsaState | None, c: FsaContributionReceived, s: FsaSettings) -> None:
    if fsa is not None and c.contribution_id in fsa.contribution_ids:
        raise Rejected(f"contribution {c.contribution_id} is already recorded under event"
                       f" {fsa.contribution_ids[c.contribution_id]}", field="contribution_id")
    year = fsa.years.get(fsa_key(c.plan_year, c.account_type)) if fsa is not None else None
    if year is None or not year.elected:
        raise Rejected(f"no {ACCOUNT_NAMES[c.account_type]} election for plan year {c.plan_year} to contribute to",
                       field="plan_year")
    _check_not_over(c.plan_year, c.account_type, c.effective_on, s, "a contribution")
    if year.closed:
        raise Rejected(f"plan year {c.plan_year} is closed", field="plan_year")


def _check_claim(fsa: FsaState | None, c: FsaClaimSubmitted) -> None:
    if fsa is not None and c.claim_id in fsa.claims:
        raise Rejected(f"claim {c.claim_id} was already adjudicated (event {fsa.claims[c.claim_id].event_id})",
                       field="claim_id")
