"""Coverage: the effective-dated timeline of who is covered by what, and the questions rules ask of it.

``apply_enrollment`` folds one 834-style change into the account's segments (add, change, terminate,
reinstate); the query functions answer which segments are in force or priced in a month. Pure.
"""

from __future__ import annotations

from datetime import date, timedelta

from events.types import EnrollmentChanged
from processor.rules.dates import last_day, next_month, same_day_months_later
from processor.settings import PlanSettings
from processor.state import AccountState, CoverageSegment


def segments_of(account: AccountState, member_id: str, line: str) -> list[CoverageSegment]:
    return [s for s in account.coverages if s.member_id == member_id and s.coverage_line == line]


# COBRA maximum coverage periods in months (42 USC 300bb-2(2)(A)): termination or reduced hours 18,
# with a disability extension 29; a secondary qualifying event 36.
COBRA_SECONDARY_EVENTS = frozenset({"death", "divorce", "dependent_loss", "medicare"})


def cobra_maximum_end(e: EnrollmentChanged) -> date | None:
    """The last day COBRA continuation runs at most: the date N months after the qualifying event (the
    statute's period ends "not earlier than" that date)."""
    if e.status != "cobra" or e.qualifying_event_on is None:
        return None
    months = 36 if e.qualifying_event in COBRA_SECONDARY_EVENTS else 29 if e.disability_extension else 18
    return same_day_months_later(e.qualifying_event_on, months)


UNKNOWN_TIER = "unknown"  # no rate is published for it, so such a coverage is never priced by accident


def tier_in_force(existing: list[CoverageSegment], on: date) -> str:
    """The tier an enrollment without one (834 HD05 absent, not derivable) takes: the tier of the
    member's segment in force for that coverage line, else of its latest segment, else unknown."""
    current = [s for s in existing if s.begin <= on and (s.end is None or s.end >= on)]
    chosen = max(current or existing, key=lambda s: s.begin, default=None)
    return chosen.tier if chosen is not None else UNKNOWN_TIER


def _segment(e: EnrollmentChanged, begin: date, end: date | None, tier: str) -> CoverageSegment:
    maximum = cobra_maximum_end(e)
    if maximum is not None and (end is None or end > maximum):
        end = maximum  # coverage ends at the maximum period: bills beyond it are for months without coverage
    return CoverageSegment(
        member_id=e.member_id,
        relationship=e.relationship,
        coverage_line=e.coverage_line,
        plan=e.plan,
        tier=tier,
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
        birth_date=e.birth_date,
        missing_elements=e.missing_elements,
    )


def apply_enrollment(account: AccountState, e: EnrollmentChanged) -> None:
    """Fold one enrollment change into the member's segments for its coverage line."""
    existing = segments_of(account, e.member_id, e.coverage_line)
    tier = e.tier if e.tier is not None else tier_in_force(existing, e.benefit_begin)
    if e.action == "add":
        account.coverages.append(_segment(e, e.benefit_begin, e.benefit_end, tier))
    elif e.action == "change":
        # Split the segment in force on the change date: old terms before, new terms from it on.
        at = e.benefit_begin
        current = next((s for s in existing if s.begin <= at and (s.end is None or s.end >= at)), None)
        if current is None:
            account.coverages.append(_segment(e, at, e.benefit_end, tier))
        else:
            old_end = current.end
            if current.begin == at:
                account.coverages.remove(current)
            else:
                current.end = at - timedelta(days=1)
            account.coverages.append(_segment(e, at, e.benefit_end if e.benefit_end is not None else old_end, tier))
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
            account.coverages.append(_segment(e, e.benefit_begin, e.benefit_end, tier))
        else:
            latest.end = e.benefit_end
            latest.end_event_id = None
            latest.end_reason = None
    account.coverages.sort(key=lambda s: (s.member_id, s.coverage_line, s.begin))


def change_date(e: EnrollmentChanged) -> date:
    """The day a change takes effect: a termination's last covered day, otherwise its benefit begin."""
    return e.benefit_end if e.action == "terminate" and e.benefit_end is not None else e.benefit_begin


def priced_begin(seg: CoverageSegment, plan: PlanSettings) -> date:
    """The first day a coverage is priced: its benefit begin, or under ``first_of_month_following`` the
    first of the month after a begin later than the 1st."""
    if plan.coverage_start == "first_of_month_following" and seg.begin.day != 1:
        return next_month(seg.begin)
    return seg.begin


def in_force_all(account: AccountState, month: date, plan: PlanSettings) -> list[CoverageSegment]:
    """Every member's coverage overlapping the month, dependents included."""
    last = last_day(month)
    if plan.coverage_start == "event_date":  # the common case, without a call per segment
        return [s for s in account.coverages if s.begin <= last and (s.end is None or s.end >= month)]
    return [s for s in account.coverages
            if priced_begin(s, plan) <= last and (s.end is None or s.end >= month)]


# Coverage lines with no premium: flexible spending accounts are elections and contributions, not
# insurance (their enrollment only tells when participation begins and ends).
UNPRICED_LINES = frozenset({"fsa", "dcap"})


def subscriber_in_force(account: AccountState, month: date, plan: PlanSettings) -> list[CoverageSegment]:
    """The subscriber's own priced segments overlapping the month (dependents are priced through its tier)."""
    last = last_day(month)
    if plan.coverage_start == "event_date":
        return [s for s in account.coverages
                if s.relationship == "self" and s.begin <= last and (s.end is None or s.end >= month)
                and s.coverage_line not in UNPRICED_LINES]
    return [
        s for s in account.coverages
        if s.relationship == "self" and priced_begin(s, plan) <= last and (s.end is None or s.end >= month)
        and s.coverage_line not in UNPRICED_LINES
    ]


def priced_segments(account: AccountState, month: date, plan: PlanSettings) -> list[CoverageSegment]:
    """The subscriber's coverage that prices the month.

    Whole months (the default): one segment per coverage line, the one in force on the first of the
    month or, for coverage that starts later in the month, its first segment; a change effective
    mid-month therefore applies from the following month. Daily proration: every segment in force in
    the month, each owing its share of days.
    """
    in_force = subscriber_in_force(account, month, plan)
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


def in_force_month(account: AccountState, month: date, plan: PlanSettings) -> bool:
    return bool(priced_segments(account, month, plan))


def ended_by(segment: CoverageSegment | None) -> tuple[str, ...]:
    """The event that ended a coverage: the termination, or the enrollment that gave its end date."""
    if segment is None:
        return ()
    return (segment.end_event_id or segment.event_id,)


def plan_ended_before(account: AccountState, month: date, plan_id: str) -> CoverageSegment | None:
    ended = [s for s in account.coverages
             if s.relationship == "self" and s.plan == plan_id and s.end is not None and s.end < month]
    return max(ended, key=lambda s: s.end or s.begin, default=None)


def terminated_before(account: AccountState, month: date) -> CoverageSegment | None:
    """The subscriber's latest coverage that ended before the month, if any."""
    ended = [s for s in account.coverages if s.relationship == "self" and s.end is not None and s.end < month]
    return max(ended, key=lambda s: s.end or s.begin, default=None)


def closed_from(account: AccountState, month: date) -> bool:
    """No subscriber coverage after this month: a credit here cannot pay a later premium."""
    last = last_day(month)
    return not any(s.relationship == "self" and (s.end is None or s.end > last) for s in account.coverages)
