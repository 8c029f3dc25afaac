"""The pure fold: events in, state changes and discrepancy events out. No I/O, no clock, no logging.

``apply_account_event`` mutates only the AccountState it is given and returns what changed; the
processor and replay both call it, in archive order, so live and replayed books agree.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from events.money import format_cents as cents
from events.types import (
    AdjustmentPosted,
    BillingCycleClosed,
    CashApplied,
    DayClosed,
    DiscrepancyAction,
    DiscrepancyAmountChanged,
    DiscrepancyKind,
    DiscrepancyOpened,
    DiscrepancyResolved,
    DiscrepancySuperseded,
    EnrollmentChanged,
    FsaClaimSubmitted,
    FsaContributionReceived,
    FsaElectionMade,
    InputEvent,
    OutputEvent,
    PaymentReceived,
    PaymentReversed,
    PremiumBilled,
    RatePublished,
    RefundIssued,
    RefundReturned,
    RemittanceReceived,
)
from processor.settings import PlanSettings
from processor.state import (
    PAYMENT_AFTER_TERM,
    PAYMENT_APPLIED,
    PAYMENT_DUPLICATE,
    PAYMENT_HELD,
    PAYMENT_MOVED,
    PAYMENT_REFUNDED,
    PAYMENT_REVERSED,
    UNAPPLIED_STATUSES,
    AccountState,
    AdjustmentLine,
    BillLine,
    CoverageSegment,
    MonthState,
    OpenDiscrepancy,
    PartitionState,
    PaymentLine,
    RateEntry,
    RefundLine,
    RetroLine,
    month_key,
)
from processor.tax import GTL_EXCLUSION_CENTS, gtl_imputed_cents

LEDGER_SOURCE = "benefits-ledger"


class Rejected(Exception):
    """The event is valid but cannot be applied to this account; it goes to the dead-letter topic."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(slots=True)
class Outcome:
    """What one event changed: months to re-project, payer cash deltas, discrepancy events."""

    dirty_months: set[str] = field(default_factory=set)
    coverage_changed: bool = False
    payer_unapplied_delta: dict[str, int] = field(default_factory=dict)
    emitted: list[OutputEvent] = field(default_factory=list)
    changed_discrepancies: list[OpenDiscrepancy] = field(default_factory=list)
    fsa_changed: bool = False  # the account's flexible spending accounts moved (projection fsa_account)
    derived: list[PaymentReceived] = field(default_factory=list)  # payments the ledger posts (cash_applied)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: DiscrepancyKind
    key: str
    month: date | None
    payer_id: str | None
    expected_cents: int
    actual_cents: int
    cause_event_ids: tuple[str, ...]
    explanation: str
    action: str
    actor: str


@functools.lru_cache(maxsize=4096)
def last_day(month: date) -> date:
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def first_of_month(day: date) -> date:
    return day.replace(day=1)


def discrepancy_id(account_id: str, key: str, opened_by: str) -> str:
    """Deterministic: the same account, finding and opening event always give the same id."""
    return hashlib.sha256(f"{account_id}|{key}|{opened_by}".encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------
# Broadcast reference data


def apply_partition_event(part: PartitionState, event: RatePublished | DayClosed | BillingCycleClosed) -> None:
    if isinstance(event, BillingCycleClosed):
        if part.billing_closed_through is not None and event.cycle_month < part.billing_closed_through:
            raise Rejected(
                f"billing cycle {event.cycle_month:%Y-%m} is before the closed cycle"
                f" {part.billing_closed_through:%Y-%m}", field="cycle_month",
            )
        part.billing_closed_through = event.cycle_month
        part.billing_closed_event_id = event.event_id
        return
    if isinstance(event, RatePublished):
        part.rates.setdefault(f"{event.plan}|{event.tier}", []).append(
            RateEntry(
                rate_id=event.rate_id,
                month_from=event.month_from,
                month_through=event.month_through,
                total_cents=event.total_cents,
                employee_cents=event.employee_cents,
                employer_cents=event.employer_cents,
                event_id=event.event_id,
            )
        )
    else:
        if part.business_date is not None and event.business_date < part.business_date:
            raise Rejected(
                f"business_date {event.business_date} is before the closed day {part.business_date}",
                field="business_date",
            )
        part.business_date = event.business_date
        part.business_date_event_id = event.event_id


def rate_reaches(account: AccountState, event: RatePublished) -> bool:
    """Could this rate publication move the premium of a month the account has already been billed for?

    Cheap filter: a billed month in the rate's range and a subscriber coverage in the rate's plan.
    """
    if not any(s.relationship == "self" and s.plan == event.plan for s in account.coverages):
        return False
    return any(m.month is not None and m.bills and _rate_covers(event, m.month) for m in account.months.values())


def _rate_covers(event: RatePublished, month: date) -> bool:
    return event.month_from <= month and (event.month_through is None or month <= event.month_through)


def publish_rate(
    accounts: Iterable[AccountState], part: PartitionState, event: RatePublished, plan: PlanSettings
) -> list[tuple[AccountState, Outcome]]:
    """Add a rate to the partition and recompute the billed months it reaches back into.

    A month whose premium the rate moves gets a RetroLine naming the rate, so the month shows a
    retroactive_change (and the wrong_rate it explains is superseded); a billed month that had no
    known rate until now is simply judged against it.
    """
    affected = [a for a in accounts if rate_reaches(a, event)]
    before = {a.account_id: _billed_premiums(a, part, plan, lambda m: _rate_covers(event, m)) for a in affected}
    apply_partition_event(part, event)
    days_back = (event.occurred_at.date() - event.month_from).days
    outcomes = []
    for account in affected:
        out = Outcome()
        for key, was in before[account.account_id].items():
            month = account.months[key]
            assert month.month is not None
            now = expected_premium(account, part, month.month, plan=plan)
            if now == was:
                continue
            if was is not None and now is not None:
                month.retro.append(RetroLine(
                    event_id=event.event_id, change_date=event.month_from, premium_before_cents=was,
                    premium_after_cents=now, days_back=days_back,
                    beyond_limit=days_back > plan.retroactive_limit_days, cause="rate",
                ))
            _reconcile(account, part, plan, key, event, out)
        if out.dirty_months:
            outcomes.append((account, out))
    return outcomes


def close_day(
    account: AccountState, part: PartitionState, event: DayClosed, plan: PlanSettings
) -> Outcome:
    """Re-evaluate the months a new business day can turn missing (see months_to_check), and close the
    flexible spending account plan years whose run-out the day ends."""
    out = Outcome()
    for key in months_to_check(account, event.business_date, plan):
        _reconcile(account, part, plan, key, event, out)
    if account.fsa is not None:
        from processor.fsa import fsa_may_close, settle  # processor.fsa builds on this module

        if fsa_may_close(account.fsa, event.business_date, plan.fsa):
            settle(account.fsa, event.business_date, plan.fsa)
            out.fsa_changed = True
    return out


def close_billing_cycle(
    account: AccountState, part: PartitionState, event: BillingCycleClosed, plan: PlanSettings
) -> Outcome:
    """The cycle month of an account with coverage is evaluated, billed or not."""
    out = Outcome()
    m = event.cycle_month
    key = month_key(m)
    month = account.months.get(key)
    if month is not None and month.bills:
        return out  # a billed month: nothing a closing cycle can change
    if month is not None or _priced_segments(account, m, plan):
        _month(account, m)
        _reconcile(account, part, plan, key, event, out)
    return out


def months_to_check(account: AccountState, business_date: date, plan: PlanSettings) -> list[str]:
    """Billed, unpaid months past the grace period with no missing payment open yet.

    Exactly these months are re-evaluated on a DayClosed, whether the account is in a worker's memory
    or loaded from the store (``due_accounts`` selects the same), so a restart cannot change the books.
    """
    cutoff = candidate_cutoff(business_date, plan)
    keys = []
    for key, month in account.months.items():
        # cheapest tests first: this runs over every cached account of a partition on each DayClosed
        if not month.bills or any(p.status == PAYMENT_APPLIED for p in month.payments):
            continue  # nothing billed, or something paid (payments are positive: paid_cents > 0)
        due = month.due_on
        if (
            due is not None and due < cutoff and month.billed_cents + month.adjusted_cents > 0
            and f"missing_payment|{key}" not in account.open
        ):
            keys.append(key)
    return keys


def candidate_cutoff(business_date: date, plan: PlanSettings) -> date:
    """Months due before this date may be missing on ``business_date`` (the detector decides)."""
    return business_date - timedelta(days=min(plan.grace_days, plan.cobra_grace_days))


def may_become_missing(account: AccountState, business_date: date, plan: PlanSettings) -> bool:
    """Cheap filter for DayClosed: could any month of this account turn missing on this date?"""
    return bool(months_to_check(account, business_date, plan))


def day_may_change(account: AccountState, business_date: date, plan: PlanSettings) -> bool:
    """Cheap filter for DayClosed: a month may turn missing, or an FSA plan year's run-out ends."""
    if may_become_missing(account, business_date, plan):
        return True
    if account.fsa is None:
        return False
    from processor.fsa import fsa_may_close

    return fsa_may_close(account.fsa, business_date, plan.fsa)


# ---------------------------------------------------------------------------------------------
# Account events


def apply_account_event(
    account: AccountState, part: PartitionState, event: InputEvent, plan: PlanSettings
) -> Outcome:
    """Fold one account event. Raises Rejected (before changing anything) if it cannot apply."""
    assert event.account_id == account.account_id, "event routed to the wrong account"
    out = Outcome()
    if isinstance(event, EnrollmentChanged):
        before = _billed_premiums(account, part, plan)
        _apply_enrollment(account, event)
        out.coverage_changed = True
        _replace_payments(account, plan)
        _note_retroactive(account, part, plan, event, before)
        for key, month in list(account.months.items()):
            if month.month is not None:
                _reconcile(account, part, plan, key, event, out)
    elif isinstance(event, PremiumBilled):
        key = month_key(event.coverage_month)
        if event.bill_id in account.bill_months:
            raise Rejected(f"bill {event.bill_id} is already posted under another event id", field="bill_id")
        account.bill_months[event.bill_id] = key
        month = _month(account, event.coverage_month)
        month.bills.append(
            BillLine(
                bill_id=event.bill_id,
                plan=event.plan,
                tier=event.tier,
                amount_cents=event.amount_cents,
                due_on=event.due_on,
                agency_id=event.agency_id,
                event_id=event.event_id,
            )
        )
        # Cash that arrived before its bill is applied now.
        for p in month.payments:
            if p.status == PAYMENT_HELD:
                p.status = PAYMENT_APPLIED
                _delta(out, p.payer_id, -p.amount_cents)
        _reconcile(account, part, plan, key, event, out)
    elif isinstance(event, PaymentReceived):
        _apply_payment(account, event, out, plan)
        _reconcile(account, part, plan, month_key(event.coverage_month), event, out)
    elif isinstance(event, PaymentReversed):
        key, line = _payment_line(account, event.payment_id)
        if line.status == PAYMENT_REVERSED:
            raise Rejected(f"payment {event.payment_id} was already reversed by {line.reversal_event_id}",
                           field="payment_id")
        if line.status != PAYMENT_APPLIED:
            _delta(out, line.payer_id, -line.amount_cents)
        line.status = PAYMENT_REVERSED
        line.reversal_event_id = event.event_id
        _reconcile(account, part, plan, key, event, out)
    elif isinstance(event, RefundIssued):
        _reconcile(account, part, plan, _apply_refund(account, event, out), event, out)
    elif isinstance(event, RefundReturned):
        _reconcile(account, part, plan, _return_refund(account, event, out, plan), event, out)
    elif isinstance(event, CashApplied):
        _reconcile(account, part, plan, _apply_cash(account, event, out), event, out)
    elif isinstance(event, AdjustmentPosted):
        if any(a.adjustment_id == event.adjustment_id for m in account.months.values() for a in m.adjustments):
            raise Rejected(f"adjustment {event.adjustment_id} is already posted", field="adjustment_id")
        month = _month(account, event.coverage_month)
        month.adjustments.append(
            AdjustmentLine(
                adjustment_id=event.adjustment_id,
                plan=event.plan,
                amount_cents=event.amount_cents,
                event_id=event.event_id,
            )
        )
        _reconcile(account, part, plan, month_key(event.coverage_month), event, out)
    elif isinstance(event, RemittanceReceived):
        apply_remittance(account, event, out)
    elif isinstance(event, FsaElectionMade | FsaContributionReceived | FsaClaimSubmitted):
        from processor.fsa import apply_fsa_event  # processor.fsa builds on this module

        apply_fsa_event(account, event, plan, out)
    elif isinstance(event, DiscrepancyAction):
        from processor.workflow import apply_workflow_event  # processor.workflow builds on this module

        out = apply_workflow_event(account, part, event, plan)
    else:  # pragma: no cover - broadcast events never reach an account
        raise AssertionError(f"not an account event: {type(event).__name__}")
    account.events_applied += 1
    return out


def remittance_account(payer_id: str) -> str:
    """The account a payer's remittances live on."""
    return f"payer:{payer_id}"


def apply_remittance(account: AccountState, e: RemittanceReceived, out: Outcome) -> None:
    """A remittance on its payer's account: open ``remittance_total_mismatch`` when the payment total
    (BPR02) differs from the sum of its lines, resolve it when a later copy of the remittance balances.

    The finding's key names the remittance, not a month, so month reconciliation never touches it.
    """
    if e.account_id != remittance_account(e.payer_id):
        raise Rejected(f"a remittance of payer {e.payer_id} belongs on account {remittance_account(e.payer_id)},"
                       f" not {e.account_id}", field="account_id")
    key = f"remittance_total_mismatch|remittance:{e.remittance_id}"
    current = account.open.get(key)
    if e.total_cents == e.lines_total_cents:
        if current is not None:
            del account.open[key]
            out.emitted.append(DiscrepancyResolved(
                event_id=f"{current.discrepancy_id}:resolved", **_envelope(account, e, None),
                discrepancy_id=current.discrepancy_id, kind=current.kind,
                coverage_month=None, resolving_event_ids=(e.event_id,),
                explanation=f"remittance {e.remittance_id} now balances at {cents(e.total_cents)}",
            ))
        return
    gap = e.total_cents - e.lines_total_cents
    explanation = (f"remittance {e.remittance_id} (trace {e.trace_number}) from {e.payer_id} pays"
                   f" {cents(e.total_cents)} but its {e.line_count} lines sum to {cents(e.lines_total_cents)};"
                   f" {cents(abs(gap))} {'more' if gap > 0 else 'less'} than the lines")
    action = "correct the remittance: the payment total must equal the sum of its lines"
    if current is not None:
        if (current.expected_cents, current.actual_cents) != (e.lines_total_cents, e.total_cents):
            out.emitted.append(DiscrepancyAmountChanged(
                event_id=f"{current.discrepancy_id}:changed:{e.event_id}", **_envelope(account, e, None),
                discrepancy_id=current.discrepancy_id, kind=current.kind,
                coverage_month=None, previous_expected_cents=current.expected_cents,
                previous_actual_cents=current.actual_cents, expected_cents=e.lines_total_cents,
                actual_cents=e.total_cents, changing_event_ids=(e.event_id,), explanation=explanation,
            ))
            current.expected_cents, current.actual_cents = e.lines_total_cents, e.total_cents
            current.explanation = explanation
            current.cause_event_ids = (*current.cause_event_ids, e.event_id)
            out.changed_discrepancies.append(current)
        return
    did = discrepancy_id(account.account_id, key, e.event_id)
    opened = OpenDiscrepancy(
        discrepancy_id=did, kind="remittance_total_mismatch", key=key, coverage_month=None, payer_id=e.payer_id,
        expected_cents=e.lines_total_cents, actual_cents=e.total_cents, cause_event_ids=(e.event_id,),
        explanation=explanation, action=action, actor="payroll", opened_by=e.event_id,
    )
    account.open[key] = opened
    out.emitted.append(DiscrepancyOpened(
        event_id=f"{did}:opened", **_envelope(account, e, None), discrepancy_id=did,
        kind="remittance_total_mismatch", coverage_month=None, payer_id=e.payer_id,
        expected_cents=e.lines_total_cents, actual_cents=e.total_cents, cause_event_ids=(e.event_id,),
        explanation=explanation, action=action, actor="payroll",
    ))


def _month(account: AccountState, month: date | None) -> MonthState:
    key = month_key(month)
    state = account.months.get(key)
    if state is None:
        state = account.months[key] = MonthState(month=month)
    return state


def _delta(out: Outcome, payer: str, amount: int) -> None:
    out.payer_unapplied_delta[payer] = out.payer_unapplied_delta.get(payer, 0) + amount


def _segments(account: AccountState, member_id: str, line: str) -> list[CoverageSegment]:
    return [s for s in account.coverages if s.member_id == member_id and s.coverage_line == line]


def _apply_enrollment(account: AccountState, e: EnrollmentChanged) -> None:
    def segment(begin: date, end: date | None) -> CoverageSegment:
        return CoverageSegment(
            member_id=e.member_id,
            relationship=e.relationship,
            coverage_line=e.coverage_line,
            plan=e.plan,
            tier=e.tier,
            status=e.status,
            begin=begin,
            end=end,
            agency_id=e.agency_id,
            event_id=e.event_id,
            elected_on=(e.elected_on or e.effective_on) if e.status == "cobra" else None,
            cobra_start=(e.cobra_start or e.benefit_begin) if e.status == "cobra" else None,
            disability_extension=e.disability_extension,
            tax_dependent=e.tax_dependent,
            coverage_amount_cents=e.coverage_amount_cents,
            birth_year=e.birth_year,
        )

    existing = _segments(account, e.member_id, e.coverage_line)
    if e.action == "add":
        account.coverages.append(segment(e.benefit_begin, e.benefit_end))
    elif e.action == "change":
        # Split the segment in force on the change date: old terms before, new terms from it on.
        at = e.benefit_begin
        current = next((s for s in existing if s.begin <= at and (s.end is None or s.end >= at)), None)
        if current is None:
            account.coverages.append(segment(at, e.benefit_end))
        else:
            old_end = current.end
            if current.begin == at:
                account.coverages.remove(current)
            else:
                current.end = at - timedelta(days=1)
            account.coverages.append(segment(at, e.benefit_end if e.benefit_end is not None else old_end))
    elif e.action == "terminate":
        last = e.benefit_end if e.benefit_end is not None else e.benefit_begin
        for s in existing:
            if s.begin > last:
                account.coverages.remove(s)
            elif s.end is None or s.end > last:
                s.end = last
                s.end_event_id = e.event_id
                s.end_reason = e.reason
    elif e.action == "reinstate":
        latest = max(existing, key=lambda s: s.begin, default=None)
        if latest is None or (latest.end is not None and latest.end < e.benefit_begin - timedelta(days=1)):
            account.coverages.append(segment(e.benefit_begin, e.benefit_end))
        else:
            latest.end = e.benefit_end
            latest.end_event_id = None
            latest.end_reason = None
    account.coverages.sort(key=lambda s: (s.member_id, s.coverage_line, s.begin))


def priced_begin(seg: CoverageSegment, plan: PlanSettings) -> date:
    """The first day a coverage is priced: its benefit begin, or under ``first_of_month_following`` the
    first of the month after a begin later than the 1st."""
    if plan.coverage_start == "first_of_month_following" and seg.begin.day != 1:
        return last_day(seg.begin) + timedelta(days=1)
    return seg.begin


def _priced_segments(account: AccountState, month: date, plan: PlanSettings) -> list[CoverageSegment]:
    """The subscriber's coverage that prices the month.

    Whole months (the default): one segment per coverage line, the one in force on the first of the
    month or, for coverage that starts later in the month, its first segment; a change effective
    mid-month therefore applies from the following month. Daily proration: every segment in force in
    the month, each owing its share of days.
    """
    in_force = _subscriber_in_force(account, month, plan)
    if plan.proration == "daily":
        return sorted(in_force, key=lambda s: (s.coverage_line, s.begin))
    chosen: dict[str, CoverageSegment] = {}
    for seg in in_force:
        current = chosen.get(seg.coverage_line)
        if current is None:
            chosen[seg.coverage_line] = seg
            continue
        seg_begin, cur_begin = priced_begin(seg, plan), priced_begin(current, plan)
        seg_on_first = seg_begin <= month
        cur_on_first = cur_begin <= month
        if (seg_on_first and not cur_on_first) or (seg_on_first == cur_on_first and (
            seg_begin > cur_begin if seg_on_first else seg_begin < cur_begin
        )):
            chosen[seg.coverage_line] = seg
    return [chosen[line] for line in sorted(chosen)]


def _in_force_all(account: AccountState, month: date, plan: PlanSettings) -> list[CoverageSegment]:
    """Every member's coverage overlapping the month, dependents included."""
    last = last_day(month)
    if plan.coverage_start == "event_date":  # the common case, without a call per segment
        return [s for s in account.coverages if s.begin <= last and (s.end is None or s.end >= month)]
    return [s for s in account.coverages
            if priced_begin(s, plan) <= last and (s.end is None or s.end >= month)]


def _subscriber_in_force(account: AccountState, month: date, plan: PlanSettings) -> list[CoverageSegment]:
    last = last_day(month)
    if plan.coverage_start == "event_date":  # the common case, without a call per segment
        return [s for s in account.coverages
                if s.relationship == "self" and s.begin <= last and (s.end is None or s.end >= month)]
    return [
        s for s in account.coverages
        if s.relationship == "self" and priced_begin(s, plan) <= last and (s.end is None or s.end >= month)
    ]


def _ended_by(segment: CoverageSegment | None) -> tuple[str, ...]:
    """The event that ended a coverage: the termination, or the enrollment that gave its end date."""
    if segment is None:
        return ()
    return (segment.end_event_id or segment.event_id,)


def _plan_ended_before(account: AccountState, month: date, plan_id: str) -> CoverageSegment | None:
    ended = [s for s in account.coverages
             if s.relationship == "self" and s.plan == plan_id and s.end is not None and s.end < month]
    return max(ended, key=lambda s: s.end or s.begin, default=None)


def _terminated_before(account: AccountState, month: date) -> CoverageSegment | None:
    ended = [s for s in account.coverages if s.relationship == "self" and s.end is not None and s.end < month]
    return max(ended, key=lambda s: s.end or s.begin, default=None)


def _billed_premiums(
    account: AccountState, part: PartitionState, plan: PlanSettings,
    reaches: Callable[[date], bool] | None = None,
) -> dict[str, int | None]:
    """The premium each already-billed month (that the change ``reaches``, all by default) carries now,
    before an enrollment or rate change is applied."""
    return {
        key: expected_premium(account, part, m.month, plan=plan)
        for key, m in account.months.items()
        if m.month is not None and m.bills and (reaches is None or reaches(m.month))
    }


def _note_retroactive(
    account: AccountState, part: PartitionState, plan: PlanSettings, e: EnrollmentChanged,
    before: dict[str, int | None],
) -> None:
    """Record on each billed month whose premium the change moved that it reached back there."""
    change_date = e.benefit_end if e.action == "terminate" and e.benefit_end is not None else e.benefit_begin
    days_back = (e.occurred_at.date() - change_date).days
    for key, was in before.items():
        month = account.months[key]
        assert month.month is not None
        now = expected_premium(account, part, month.month, plan=plan)
        if was is None or now is None or was == now:
            continue  # unknown rate, or the change does not touch this month's premium
        month.retro.append(RetroLine(
            event_id=e.event_id, change_date=change_date, premium_before_cents=was, premium_after_cents=now,
            days_back=days_back, beyond_limit=days_back > plan.retroactive_limit_days,
        ))


# Kinds a retroactive change explains: while the month's bill differs from the premium the corrected
# enrollment calls for, that one difference is the retroactive_change, not these.
EXPLAINED_BY_RETRO = frozenset({"billed_not_enrolled", "wrong_rate"})


def _placement(account: AccountState, month: MonthState, plan: PlanSettings) -> str:
    """Where cash for a month goes when it is not a duplicate: applied, held, or after termination."""
    if month.month is None:
        return PAYMENT_HELD
    if month.bills:
        return PAYMENT_APPLIED
    if not _subscriber_in_force(account, month.month, plan) and _terminated_before(account, month.month):
        return PAYMENT_AFTER_TERM
    return PAYMENT_HELD


def _replace_payments(account: AccountState, plan: PlanSettings) -> None:
    """After an enrollment change, held and after-termination cash is placed again: a reinstatement
    turns a payment after termination into cash for the month, a retroactive termination the reverse."""
    for month in account.months.values():
        if month.bills:
            continue  # cash for a billed month is applied to the bill, whatever the coverage
        for p in month.payments:
            if p.status in (PAYMENT_HELD, PAYMENT_AFTER_TERM):
                p.status = _placement(account, month, plan)


def _payment_line(account: AccountState, payment_id: str) -> tuple[str, PaymentLine]:
    """The month key and line of a payment posted on this account; Rejected if there is none."""
    key = account.payment_months.get(payment_id)
    if key is None:
        raise Rejected(f"payment {payment_id} is unknown on account {account.account_id}", field="payment_id")
    return key, next(p for p in account.months[key].payments if p.payment_id == payment_id)


def _apply_refund(account: AccountState, e: RefundIssued, out: Outcome) -> str:
    """Return held cash, or pay back a month's credit; checks everything before changing anything.
    Returns the key of the month the refund belongs to."""
    if e.refund_id in account.refund_ids:
        raise Rejected(f"refund {e.refund_id} was already issued under another event id", field="refund_id")
    if e.amount_cents <= 0:
        raise Rejected("a refund amount must be positive", field="amount_cents")
    if e.payment_id is not None:
        key, line = _payment_line(account, e.payment_id)
        if line.status not in UNAPPLIED_STATUSES:
            raise Rejected(f"payment {e.payment_id} is {line.status}, not held cash: refund the month's credit"
                           " (coverage_month) instead", field="payment_id")
        if e.amount_cents != line.amount_cents:
            raise Rejected(f"held payment {e.payment_id} of {cents(line.amount_cents)} is returned whole, not"
                           f" {cents(e.amount_cents)}", field="amount_cents")
        line.refunded_from = line.status
        line.status = PAYMENT_REFUNDED
        line.refund_id = e.refund_id
        _delta(out, line.payer_id, -line.amount_cents)
    else:
        if e.coverage_month is None:
            raise Rejected("name the held payment returned (payment_id) or the month whose credit is refunded"
                           " (coverage_month)", field="coverage_month")
        key = month_key(e.coverage_month)
        month = account.months.get(key)
        credit = -month.balance_cents if month is not None else 0
        if e.amount_cents > credit:
            raise Rejected(f"refund of {cents(e.amount_cents)} exceeds the credit of {cents(max(credit, 0))} on"
                           f" {e.coverage_month:%Y-%m}", field="amount_cents")
        assert month is not None
        month.refunds.append(RefundLine(refund_id=e.refund_id, payee_id=e.payee_id, amount_cents=e.amount_cents,
                                        event_id=e.event_id))
    account.refund_ids.append(e.refund_id)
    return key


def _return_refund(account: AccountState, e: RefundReturned, out: Outcome, plan: PlanSettings) -> str:
    """Undo a refund that came back; returns the key of its month."""
    for key, month in account.months.items():
        for r in month.refunds:
            if r.refund_id == e.refund_id:
                if r.returned_by is not None:
                    raise Rejected(f"refund {e.refund_id} was already returned by {r.returned_by}", field="refund_id")
                r.returned_by = e.event_id
                return key
        for p in month.payments:
            if p.refund_id == e.refund_id:
                if p.status != PAYMENT_REFUNDED:
                    raise Rejected(f"refund {e.refund_id} was already returned (payment {p.payment_id} is"
                                   f" {p.status})", field="refund_id")
                assert p.refunded_from is not None
                # placed again as if it arrived now: a bill posted meanwhile applies it
                p.status = p.refunded_from if p.refunded_from == PAYMENT_DUPLICATE else _placement(account, month, plan)
                p.reversal_event_id = e.event_id
                if p.status != PAYMENT_APPLIED:
                    _delta(out, p.payer_id, p.amount_cents)
                return key
    raise Rejected(f"refund {e.refund_id} is unknown on account {account.account_id}", field="refund_id")


def _apply_cash(account: AccountState, e: CashApplied, out: Outcome) -> str:
    """Release held cash from this account and derive the payment that posts it where it belongs;
    checks everything before changing anything. Returns the key of the month the cash left."""
    if e.application_id in account.application_ids:
        raise Rejected(f"cash application {e.application_id} was already folded under another event id",
                       field="application_id")
    key, line = _payment_line(account, e.payment_id)
    if line.status not in UNAPPLIED_STATUSES:
        raise Rejected(f"payment {e.payment_id} is {line.status}, not unapplied cash", field="payment_id")
    if e.amount_cents != line.amount_cents:
        raise Rejected(f"unapplied payment {e.payment_id} of {cents(line.amount_cents)} is applied whole, not"
                       f" {cents(e.amount_cents)}", field="amount_cents")
    target = f"{e.to_account_id}/{e.to_coverage_month:%Y-%m}"
    if e.to_account_id == account.account_id and key == month_key(e.to_coverage_month):
        raise Rejected(f"payment {e.payment_id} is already on {target}", field="to_coverage_month")
    line.status = PAYMENT_MOVED
    line.moved_to = target
    line.reversal_event_id = e.event_id
    _delta(out, line.payer_id, -line.amount_cents)
    account.application_ids.append(e.application_id)
    out.derived.append(PaymentReceived(
        event_id=f"{e.event_id}:payment", account_id=e.to_account_id, effective_on=e.effective_on,
        occurred_at=e.occurred_at, source=LEDGER_SOURCE, causation_id=e.event_id,
        payment_id=e.application_id, coverage_month=e.to_coverage_month, amount_cents=line.amount_cents,
        method=line.method, payer_id=line.payer_id, remittance_id=line.remittance_id,  # type: ignore[arg-type]
        tax_treatment=line.tax_treatment, pay_frequency=line.pay_frequency,  # type: ignore[arg-type]
    ))
    return key


def _closed_from(account: AccountState, month: date) -> bool:
    """No subscriber coverage after this month: a credit here cannot pay a later premium."""
    last = last_day(month)
    return not any(s.relationship == "self" and (s.end is None or s.end > last) for s in account.coverages)


def _apply_payment(account: AccountState, e: PaymentReceived, out: Outcome, plan: PlanSettings) -> None:
    if e.payment_id in account.payment_months:
        raise Rejected(f"payment {e.payment_id} is already posted under another event id", field="payment_id")
    key = month_key(e.coverage_month)
    month = _month(account, e.coverage_month)
    duplicate_of = None
    if e.trace_number is not None and e.coverage_month is not None:
        duplicate_of = next(
            (p.payment_id for p in month.payments
             if p.trace_number == e.trace_number and p.status != PAYMENT_REVERSED),
            None,
        )
    if duplicate_of is not None:
        status = PAYMENT_DUPLICATE
    else:
        status = _placement(account, month, plan)
    month.payments.append(
        PaymentLine(
            payment_id=e.payment_id,
            amount_cents=e.amount_cents,
            payer_id=e.payer_id,
            method=e.method,
            trace_number=e.trace_number,
            remittance_id=e.remittance_id,
            status=status,
            event_id=e.event_id,
            duplicate_of=duplicate_of,
            tax_treatment=e.tax_treatment,
            pay_frequency=e.pay_frequency,
        )
    )
    account.payment_months[e.payment_id] = key
    if status != PAYMENT_APPLIED:
        _delta(out, e.payer_id, e.amount_cents)


# ---------------------------------------------------------------------------------------------
# Detection


def segment_premium(seg: CoverageSegment, rate: RateEntry, month: date, plan: PlanSettings) -> int:
    """The month's premium of one coverage, rounded half up to the cent.

    The plan cost, or for COBRA continuation 102% of it (150% in months 19 to 29 of a disability
    extension, 42 USC 300bb-2); nothing for the month of a retiree's death when the plan waives it;
    under daily proration, the share of the month's days the coverage is in force.
    """
    if (
        plan.retiree_death_month_waived and seg.status == "retiree" and seg.end_reason == "death"
        and seg.end is not None and first_of_month(seg.end) == month
    ):
        return 0
    total = rate.total_cents
    if seg.status == "cobra":
        percent = plan.cobra_premium_percent
        if seg.disability_extension and seg.cobra_start is not None:
            month_number = (month.year - seg.cobra_start.year) * 12 + month.month - seg.cobra_start.month + 1
            if 19 <= month_number <= 29:
                percent = plan.cobra_disability_percent
        total = (total * percent + 50) // 100
    if plan.proration == "daily":
        last = last_day(month)
        days = (min(seg.end or last, last) - max(priced_begin(seg, plan), month)).days + 1
        total = (total * days * 2 + last.day) // (2 * last.day)
    return total


def plan_premium(
    segs: list[CoverageSegment], part: PartitionState, month: date, plan: PlanSettings
) -> tuple[int | None, tuple[str, ...]]:
    """What the month owes for these coverages (one plan's) and the rate events that say so; None
    when a rate is not known."""
    total = 0
    rate_ids: list[str] = []
    for seg in segs:
        rate = part.rate_for(seg.plan, seg.tier, month)
        if rate is None:
            return None, ()
        total += segment_premium(seg, rate, month, plan)
        rate_ids.append(rate.event_id)
    return total, tuple(dict.fromkeys(rate_ids))


def expected_premium(
    account: AccountState, part: PartitionState, month: date,
    in_force_self: list[CoverageSegment] | None = None, plan: PlanSettings | None = None,
) -> int | None:
    """Premium the enrollment and rate tables call for; None when a rate is not known.

    Dependents are priced through the subscriber's tier, so only the subscriber's segments count.
    """
    plan = plan or PlanSettings()
    if in_force_self is None:
        in_force_self = _priced_segments(account, month, plan)
    return plan_premium(in_force_self, part, month, plan)[0]


def detect(
    account: AccountState, part: PartitionState, plan: PlanSettings, key: str,
    in_force_self: list[CoverageSegment] | None = None,
) -> dict[str, Finding]:
    """Every discrepancy the month shows now. Pure: same state in, same findings out."""
    month = account.months[key]
    found: dict[str, Finding] = {}
    m = month.month

    def add(f: Finding) -> None:
        found[f.key] = f

    in_force = (in_force_self if in_force_self is not None else _priced_segments(account, m, plan)) if m else []
    cobra_seg = next((s for s in in_force if s.status == "cobra"), None)
    if m is not None:
        by_plan: dict[str, list[BillLine]] = {}
        for b in month.bills:
            by_plan.setdefault(b.plan, []).append(b)
        unenrolled: list[tuple[str, int, tuple[str, ...], str | None]] = []
        for plan_id, bills in sorted(by_plan.items()):
            billed = sum(b.amount_cents for b in bills) + sum(
                a.amount_cents for a in month.adjustments if a.plan == plan_id
            )
            causes = tuple(b.event_id for b in bills)
            segs = [s for s in in_force if s.plan == plan_id]
            if not segs:
                if billed != 0:  # billed, then fully credited back: nothing is owed
                    unenrolled.append((plan_id, billed, causes, bills[0].agency_id))
                continue
            premium, rate_ids = plan_premium(segs, part, m, plan)
            if premium is not None and billed != premium:
                seg = segs[0]
                what = ("the premium for the month of the retiree's death is waived" if premium == 0
                        and seg.end_reason == "death" else
                        f"the {'COBRA premium' if seg.status == 'cobra' else 'rate'} is {cents(premium)}"
                        + (" for the days covered" if plan.proration == "daily" else ""))
                add(Finding(
                    kind="wrong_rate", key=f"wrong_rate|{key}|{plan_id}", month=m,
                    payer_id=bills[0].agency_id, expected_cents=premium, actual_cents=billed,
                    cause_event_ids=(*causes, *(s.event_id for s in segs), *rate_ids),
                    explanation=f"billed {cents(billed)} for {plan_id}/{'+'.join(s.tier for s in segs)} in"
                    f" {m:%Y-%m}; {what}",
                    action="correct the bill with an adjustment or fix the rate table", actor="billing",
                ))

        if unenrolled:
            # One finding per month: billing must cancel every bill of the month with no coverage.
            total = sum(u[1] for u in unenrolled)
            ended = _terminated_before(account, m)
            terminations = tuple(dict.fromkeys(
                e for plan_id, *_ in unenrolled for e in _ended_by(_plan_ended_before(account, m, plan_id))
            ))
            add(Finding(
                kind="billed_not_enrolled", key=f"billed_not_enrolled|{key}", month=m,
                payer_id=unenrolled[0][3], expected_cents=0, actual_cents=total,
                cause_event_ids=tuple(c for u in unenrolled for c in u[2]) + (terminations or _ended_by(ended)),
                explanation=f"billed {cents(total)} for {', '.join(u[0] for u in unenrolled)} in {m:%Y-%m}"
                " with no coverage in force" + (f" (coverage ended {ended.end})" if ended else ""),
                action="cancel the bills or process the missing enrollment", actor="billing",
            ))

    net_billed = month.billed_cents + month.adjusted_cents
    applied = [p for p in month.payments if p.status == PAYMENT_APPLIED]
    paid = sum(p.amount_cents for p in applied)
    if m is not None and applied and month.bills:
        refunded = month.refunded_cents
        owed = _owed_by_deductions(applied, net_billed, plan)
        gap = owed - (paid - refunded)
        payer = applied[-1].payer_id
        causes = tuple(b.event_id for b in month.bills) + tuple(p.event_id for p in applied)
        who = "member" if applied[-1].method in ("direct", "card") else "agency_coordinator"
        cobra = cobra_seg
        # 26 CFR 54.4980B-8: a shortfall no larger than the lesser of $50 or 10% counts as full payment
        # unless the plan gives notice and a reasonable time to pay; the notice is this discrepancy.
        insignificant = min(plan.cobra_shortfall_max_cents, net_billed * plan.cobra_shortfall_max_percent // 100)
        if cobra is not None and 0 < gap <= insignificant:
            add(Finding(
                kind="cobra_shortfall", key=f"cobra_shortfall|{key}", month=m, payer_id=payer,
                expected_cents=net_billed, actual_cents=paid, cause_event_ids=causes,
                explanation=f"COBRA payment {cents(paid)} of {cents(net_billed)} for {m:%Y-%m} is {cents(gap)}"
                f" short, within the lesser of {cents(plan.cobra_shortfall_max_cents)} and"
                f" {plan.cobra_shortfall_max_percent}%: treated as paid",
                action=f"send the member a notice of the {cents(gap)} balance with a reasonable time to pay",
                actor="member",
            ))
        elif gap > plan.tolerance_cents:
            add(Finding(
                kind="underpaid", key=f"underpaid|{key}", month=m, payer_id=payer,
                expected_cents=owed, actual_cents=paid, cause_event_ids=causes,
                explanation=f"paid {cents(paid)} of {cents(owed)} owed for {m:%Y-%m};"
                f" {cents(gap)} short",
                action="collect the shortfall; check for a tier or plan change payroll did not follow",
                actor=who,
            ))
        elif -gap > plan.tolerance_cents and _closed_from(account, m):
            add(Finding(
                kind="refund_due", key=f"refund_due|{key}", month=m, payer_id=payer,
                expected_cents=net_billed, actual_cents=paid - refunded, cause_event_ids=causes,
                explanation=f"{cents(-gap)} paid for {m:%Y-%m} is not owed and the coverage has ended:"
                " it cannot pay a later premium",
                action=f"refund {cents(-gap)} to {payer}", actor="accounts_staff",
            ))
        elif -gap > plan.tolerance_cents:
            add(Finding(
                kind="overpaid", key=f"overpaid|{key}", month=m, payer_id=payer,
                expected_cents=owed, actual_cents=paid - refunded, cause_event_ids=causes,
                explanation=f"paid {cents(paid)} against {cents(owed)} owed for {m:%Y-%m};"
                f" {cents(-gap)} over",
                action="refund or credit the excess; check payroll deductions", actor=who,
            ))

    for p in month.payments:
        if p.status == PAYMENT_HELD:
            what = "names no coverage month" if m is None else f"is for {m:%Y-%m}, which was never billed"
            add(Finding(
                kind="unmatched_payment", key=f"unmatched_payment|{key}|{p.payment_id}", month=m,
                payer_id=p.payer_id, expected_cents=0, actual_cents=p.amount_cents,
                cause_event_ids=(p.event_id,),
                explanation=f"payment {p.payment_id} of {cents(p.amount_cents)} from {p.payer_id} {what};"
                " held as unapplied cash",
                action="research the payment and apply or refund it", actor="accounts_staff",
            ))
        elif p.status == PAYMENT_DUPLICATE:
            add(Finding(
                kind="duplicate_payment", key=f"duplicate_payment|{key}|{p.payment_id}", month=m,
                payer_id=p.payer_id, expected_cents=0, actual_cents=p.amount_cents,
                cause_event_ids=(p.event_id,),
                explanation=f"payment {p.payment_id} repeats trace {p.trace_number} of payment"
                f" {p.duplicate_of} for {m:%Y-%m}" if m else f"payment {p.payment_id} repeats a trace",
                action="return the duplicate or apply it as a credit", actor="accounts_staff",
            ))
    pre_tax = [p for p in applied if p.tax_treatment == "pre_tax"]
    if m is not None and pre_tax:
        partners = [
            s for s in _in_force_all(account, m, plan)
            if s.relationship == "domestic_partner" and not s.tax_dependent
        ]
        if partners:
            amount = sum(p.amount_cents for p in pre_tax)
            add(Finding(
                kind="tax_treatment", key=f"tax_treatment|{key}", month=m, payer_id=pre_tax[-1].payer_id,
                expected_cents=0, actual_cents=amount,
                cause_event_ids=tuple(p.event_id for p in pre_tax) + tuple(s.event_id for s in partners),
                explanation=f"{cents(amount)} for {m:%Y-%m} was deducted pre-tax, but the coverage includes"
                f" {', '.join(s.member_id for s in partners)}, a domestic partner who is not a tax dependent:"
                " that share is post-tax (IRC 125) and its employer-paid value is imputed income"
                + (f" ({cents(month.post_tax_cents)} post-tax, {cents(month.imputed_income_cents)} imputed income)"
                   if month.post_tax_cents is not None and month.imputed_income_cents is not None else ""),
                action="take the partner's share after tax and report the employer-paid value as imputed income",
                actor="payroll",
            ))

    after = [p for p in month.payments if p.status == PAYMENT_AFTER_TERM]
    if after and m is not None:
        amount = sum(p.amount_cents for p in after)
        ended = _terminated_before(account, m)
        add(Finding(
            kind="paid_after_termination", key=f"paid_after_termination|{key}", month=m,
            payer_id=after[0].payer_id, expected_cents=0, actual_cents=amount,
            cause_event_ids=tuple(p.event_id for p in after) + _ended_by(ended),
            explanation=f"{cents(amount)} paid for {m:%Y-%m}, after coverage ended"
            + (f" on {ended.end}" if ended else ""),
            action=f"refund {cents(amount)} to {after[0].payer_id}", actor="accounts_staff",
        ))

    if m is not None and month.retro and month.expected_cents is not None and net_billed != month.expected_cents:
        expected = month.expected_cents
        last = month.retro[-1]
        difference = net_billed - expected
        beyond = [r for r in month.retro if r.beyond_limit]
        add(Finding(
            kind="retroactive_change", key=f"retroactive_change|{key}", month=m,
            payer_id=month.bills[0].agency_id if month.bills else None,
            expected_cents=expected, actual_cents=net_billed,
            cause_event_ids=tuple(dict.fromkeys(r.event_id for r in month.retro)),
            explanation=f"{'rate' if last.cause == 'rate' else 'enrollment'} change {last.event_id} effective"
            f" {last.change_date} moved the premium"
            f" for {m:%Y-%m} from {cents(last.premium_before_cents)} to {cents(last.premium_after_cents)};"
            f" billed {cents(net_billed)}"
            + (f"; reaches {beyond[-1].days_back} days back, beyond the plan's"
               f" {plan.retroactive_limit_days}-day retroactive limit" if beyond else ""),
            action=(f"refund or credit {cents(difference)}" if difference > 0 else f"bill {cents(-difference)}")
            + f" for {m:%Y-%m}" + ("; needs approval: beyond the retroactive limit" if beyond else ""),
            actor="billing",
        ))
        for explained in [k for k, f in found.items() if f.kind in EXPLAINED_BY_RETRO]:
            del found[explained]

    if (
        m is not None and not month.bills and part.billing_closed_through is not None
        and m <= part.billing_closed_through and in_force_month(account, m, plan)
    ):
        expected = month.expected_cents or 0
        covered = _priced_segments(account, m, plan)
        add(Finding(
            kind="enrolled_not_billed", key=f"enrolled_not_billed|{key}", month=m,
            payer_id=covered[0].agency_id if covered else None,
            expected_cents=expected, actual_cents=month.billed_cents + month.adjusted_cents,
            cause_event_ids=tuple(s.event_id for s in covered)
            + ((part.billing_closed_event_id,) if part.billing_closed_event_id else ()),
            explanation=f"coverage ({', '.join(s.plan + '/' + s.tier for s in covered)}) was in force in"
            f" {m:%Y-%m} and the billing cycle closed without a bill",
            action=f"bill {cents(expected)} for {m:%Y-%m}; check why the enrollment missed billing",
            actor="billing",
        ))

    due = month.due_on
    deadline = _payment_deadline(month, plan, cobra_seg)
    cobra_month = cobra_seg
    if (
        m is not None and due is not None and deadline is not None and part.business_date is not None
        and paid == 0 and net_billed > plan.tolerance_cents and part.business_date > deadline
        and cobra_month is not None
    ):
        add(Finding(
            kind="missing_payment", key=f"missing_payment|{key}", month=m, payer_id=month.bills[0].agency_id,
            expected_cents=net_billed, actual_cents=0,
            cause_event_ids=tuple(b.event_id for b in month.bills) + (cobra_month.event_id,)
            + ((part.business_date_event_id,) if part.business_date_event_id else ()),
            explanation=f"COBRA premium {cents(net_billed)} for {m:%Y-%m} was not paid by {deadline}"
            f" (due {due}; elected {cobra_month.elected_on})",
            action="terminate COBRA continuation coverage for non-payment, effective the end of the last"
            " paid month",
            actor="accounts_staff",
        ))
    elif (
        m is not None and due is not None and deadline is not None and part.business_date is not None
        and paid == 0 and net_billed > plan.tolerance_cents and part.business_date > deadline
    ):
        agency = month.bills[0].agency_id
        add(Finding(
            kind="missing_payment", key=f"missing_payment|{key}", month=m, payer_id=agency,
            expected_cents=net_billed, actual_cents=0,
            cause_event_ids=tuple(b.event_id for b in month.bills)
            + ((part.business_date_event_id,) if part.business_date_event_id else ()),
            explanation=f"{cents(net_billed)} billed for {m:%Y-%m} was due {due} and is unpaid"
            f" {plan.grace_days} days later ({part.business_date})",
            action="collect or start delinquency",
            actor="agency_coordinator" if agency else "member",
        ))
    return found


def premium_shares(
    segs: list[CoverageSegment], part: PartitionState, month: date, plan: PlanSettings
) -> tuple[int | None, int | None, int | None]:
    """The month's expected premium, its employee share and its employer share; all None while a rate
    is not known. COBRA continuation is paid wholly by the member; otherwise each coverage's premium
    (as prorated or waived) is split in the rate table's proportion, the employee's part rounded half up."""
    employee = employer = 0
    for seg in segs:
        rate = part.rate_for(seg.plan, seg.tier, month)
        if rate is None:
            return None, None, None
        premium = segment_premium(seg, rate, month, plan)
        if seg.status == "cobra" or rate.total_cents == 0:
            share = premium if seg.status == "cobra" else 0
        else:
            share = (premium * rate.employee_cents * 2 + rate.total_cents) // (2 * rate.total_cents)
        employee += share
        employer += premium - share
    return employee + employer, employee, employer


def tax_split(
    account: AccountState, part: PartitionState, month: date, in_force_self: list[CoverageSegment],
    plan: PlanSettings,
) -> tuple[int | None, int | None]:
    """The month's post-tax share of the employee's payroll deductions and its imputed income.

    A domestic partner who is not a tax dependent: the difference between the subscriber's tier and
    the tier without the partner (``partner_tier_without``) is the partner's share; its employee part
    is post-tax (IRC 125) and its employer part imputed income. When that tier has no rate, the whole
    coverage is the partner's share (nothing can be separated). Group-term life above $50,000: the
    IRS Table I cost of the excess, by the age at the end of the year. Only active employees' coverage
    is paid through payroll; (None, None) while a rate or a needed birth year is not known.
    """
    partners = {s.coverage_line for s in _in_force_all(account, month, plan)
                if s.relationship == "domestic_partner" and not s.tax_dependent} if any(
        s.relationship == "domestic_partner" for s in account.coverages) else set()
    post_tax = imputed = 0
    for seg in in_force_self:
        if seg.status != "active":
            continue
        rate = part.rate_for(seg.plan, seg.tier, month)
        if rate is None:
            return None, None
        if seg.coverage_line in partners:
            without_tier = plan.partner_tier_without.get(seg.tier)
            without = part.rate_for(seg.plan, without_tier, month) if without_tier is not None else None
            if without is None:
                post_tax += rate.employee_cents
                imputed += rate.employer_cents
            else:
                post_tax += max(0, rate.employee_cents - without.employee_cents)
                imputed += max(0, rate.employer_cents - without.employer_cents)
        if seg.coverage_line != "life":
            continue
        paid_after_tax = rate.employee_cents if plan.life_contributions_post_tax else 0
        post_tax += paid_after_tax
        if seg.coverage_amount_cents is not None and seg.coverage_amount_cents > GTL_EXCLUSION_CENTS:
            if seg.birth_year is None:
                return None, None
            imputed += gtl_imputed_cents(seg.coverage_amount_cents, month.year - seg.birth_year, paid_after_tax)
    return post_tax, imputed


def in_force_month(account: AccountState, month: date, plan: PlanSettings) -> bool:
    return bool(_priced_segments(account, month, plan))


PAY_PERIODS_A_YEAR = {"weekly": 52, "biweekly": 26, "semi_monthly": 24}


def _owed_by_deductions(applied: list[PaymentLine], net_billed: int, plan: PlanSettings) -> int:
    """What the month's payments should add up to. Payroll deductions of one pay frequency owe, each,
    (12 / pay periods a year) of the monthly premium, rounded half up to the cent: a month with three
    biweekly deductions owes 3 x 12/26 of it, one with two owes 2 x 12/26."""
    frequencies = {p.pay_frequency for p in applied}
    if plan.payroll_allocation != "per_deduction" or len(frequencies) != 1:
        return net_billed
    periods = PAY_PERIODS_A_YEAR.get(next(iter(frequencies)) or "monthly")
    if periods is None:
        return net_billed
    per_deduction = (net_billed * 12 * 2 + periods) // (2 * periods)
    return per_deduction * len(applied)


def _payment_deadline(month: MonthState, plan: PlanSettings, cobra: CoverageSegment | None) -> date | None:
    """The last day a month's premium is timely: due date plus grace, or for COBRA (``cobra``: the
    month's COBRA coverage) the later of the due date plus the COBRA grace period and the election plus
    the first-payment period."""
    due = month.due_on
    if due is None or month.month is None:
        return None
    if cobra is None:
        return due + timedelta(days=plan.grace_days)
    deadline = due + timedelta(days=plan.cobra_grace_days)
    if cobra.elected_on is not None:
        deadline = max(deadline, cobra.elected_on + timedelta(days=plan.cobra_first_payment_days))
    return deadline


def _reconcile(
    account: AccountState, part: PartitionState, plan: PlanSettings, key: str,
    trigger: InputEvent, out: Outcome,
) -> None:
    """Diff the month's findings against its open discrepancies and emit the difference."""
    month = account.months[key]
    in_force_self = None
    if month.month is not None:
        in_force_self = _priced_segments(account, month.month, plan)
        month.expected_cents, month.employee_share_cents, month.employer_share_cents = premium_shares(
            in_force_self, part, month.month, plan
        )
        month.post_tax_cents, month.imputed_income_cents = tax_split(
            account, part, month.month, in_force_self, plan
        )
    out.dirty_months.add(key)
    found = detect(account, part, plan, key, in_force_self)
    if account.closed:  # a finding a person dismissed stays closed while it shows the same amounts
        from processor.workflow import screen_findings

        screen_findings(account, key, found)
    # A discrepancy that disappears because this enrollment change reached back into its month is
    # explained by the change (superseded), not fixed (resolved).
    change = (trigger.action if isinstance(trigger, EnrollmentChanged)
              else "rate change" if isinstance(trigger, RatePublished) else None)
    retroactive = change is not None and (
        isinstance(trigger, RatePublished) or any(r.event_id == trigger.event_id for r in month.retro)
    )
    retro_key = f"retroactive_change|{key}"
    superseded: list[OutputEvent] = []
    for dkey, open_d in list(account.open.items()):
        if _month_of_key(dkey) != key or dkey in found:
            continue
        del account.open[dkey]
        if retroactive and open_d.kind != "retroactive_change":
            open_retro = account.open.get(retro_key)
            superseded.append(DiscrepancySuperseded(
                event_id=f"{open_d.discrepancy_id}:superseded",
                **_envelope(account, trigger, open_d.coverage_month),
                discrepancy_id=open_d.discrepancy_id,
                kind=open_d.kind,
                coverage_month=open_d.coverage_month,
                superseding_event_ids=(trigger.event_id,),
                superseded_by=(open_retro.discrepancy_id if open_retro is not None
                               else discrepancy_id(account.account_id, retro_key, trigger.event_id)
                               if retro_key in found else None),
                explanation=f"{open_d.kind} explained by the retroactive {change} {trigger.event_id}",
            ))
            continue
        out.emitted.append(DiscrepancyResolved(
            event_id=f"{open_d.discrepancy_id}:resolved",
            **_envelope(account, trigger, open_d.coverage_month),
            discrepancy_id=open_d.discrepancy_id,
            kind=open_d.kind,
            coverage_month=open_d.coverage_month,
            resolving_event_ids=(trigger.event_id,),
            explanation=f"{open_d.kind} closed by {type(trigger).__name__} {trigger.event_id}",
        ))
    for dkey, f in found.items():
        current = account.open.get(dkey)
        if current is not None:
            if (current.expected_cents, current.actual_cents) != (f.expected_cents, f.actual_cents):
                out.emitted.append(DiscrepancyAmountChanged(
                    event_id=f"{current.discrepancy_id}:changed:{trigger.event_id}",
                    **_envelope(account, trigger, current.coverage_month),
                    discrepancy_id=current.discrepancy_id,
                    kind=current.kind,
                    coverage_month=current.coverage_month,
                    previous_expected_cents=current.expected_cents,
                    previous_actual_cents=current.actual_cents,
                    expected_cents=f.expected_cents,
                    actual_cents=f.actual_cents,
                    changing_event_ids=(trigger.event_id,),
                    explanation=f.explanation,
                ))
                current.expected_cents = f.expected_cents
                current.actual_cents = f.actual_cents
                current.explanation = f.explanation
                current.cause_event_ids = tuple(dict.fromkeys((*current.cause_event_ids, *f.cause_event_ids)))
                out.changed_discrepancies.append(current)
            continue
        did = discrepancy_id(account.account_id, dkey, trigger.event_id)
        opened = OpenDiscrepancy(
            discrepancy_id=did, kind=f.kind, key=dkey, coverage_month=f.month, payer_id=f.payer_id,
            expected_cents=f.expected_cents, actual_cents=f.actual_cents,
            cause_event_ids=tuple(dict.fromkeys((*f.cause_event_ids, trigger.event_id))),
            explanation=f.explanation, action=f.action, actor=f.actor, opened_by=trigger.event_id,
        )
        account.open[dkey] = opened
        out.emitted.append(DiscrepancyOpened(
            event_id=f"{did}:opened",
            **_envelope(account, trigger, f.month),
            discrepancy_id=did,
            kind=f.kind,
            coverage_month=f.month,
            payer_id=f.payer_id,
            expected_cents=f.expected_cents,
            actual_cents=f.actual_cents,
            cause_event_ids=opened.cause_event_ids,
            explanation=f.explanation,
            action=f.action,
            actor=f.actor,  # type: ignore[arg-type]
        ))
    out.emitted.extend(superseded)  # after the retroactive_change they point to was opened


def _envelope(account: AccountState, trigger: InputEvent, month: date | None) -> dict[str, Any]:
    """The fields every discrepancy event shares: its account, the coverage month it is about (or the
    trigger's business date), the trigger's own time (never the clock) and the trigger as its cause."""
    return {
        "account_id": account.account_id,
        "effective_on": month or trigger.effective_on,
        "occurred_at": trigger.occurred_at,
        "source": LEDGER_SOURCE,
        "causation_id": trigger.event_id,
    }


def _month_of_key(dkey: str) -> str:
    return dkey.split("|", 2)[1]
