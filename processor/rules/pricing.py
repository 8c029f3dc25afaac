"""Pricing: rate tables, and what a month's coverage costs. Pure.

Rates are published per plan and tier over a range of coverage months; the latest publication covering
a month wins. A month's premium is the sum over the coverages that price it (only the subscriber's:
dependents are priced through the tier), each at the rate in force, as a COBRA percent, prorated by days
when the plan says so, or waived for a retiree's month of death.
"""

from __future__ import annotations

from datetime import date

from events.types import RatePublished
from processor.rules import cobra
from processor.rules.coverage import priced_begin, priced_segments
from processor.rules.dates import first_of_month, last_day
from processor.settings import PlanSettings
from processor.state import AccountState, CoverageSegment, PartitionState, RateEntry


def rate_covers(event: RatePublished, month: date) -> bool:
    return event.month_from <= month and (event.month_through is None or month <= event.month_through)


def add_rate(part: PartitionState, event: RatePublished) -> None:
    """Record a publication on the partition's rate table (later publications override earlier ones)."""
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
    part.rates_changed(event.plan, event.tier)


def segment_premium(seg: CoverageSegment, rate: RateEntry, month: date, plan: PlanSettings) -> int:
    """The month's premium of one coverage, rounded half up to the cent.

    The plan cost, or for COBRA continuation its percent of it; nothing for the month of a retiree's
    death when the plan waives it; under daily proration, the share of the month's days the coverage
    is in force.
    """
    if (
        plan.retiree_death_month_waived and seg.status == "retiree" and seg.end_reason == "death"
        and seg.end is not None and first_of_month(seg.end) == month
    ):
        return 0
    total = rate.total_cents
    if cobra.is_cobra(seg):
        total = (total * cobra.premium_percent(seg, month, plan) + 50) // 100
    return prorated(total, seg, month, plan)


def first_priced_day(seg: CoverageSegment, month: date, plan: PlanSettings) -> date:
    """The first day of the month the segment is priced for."""
    return max(priced_begin(seg, plan), month)


def prorated(amount: int, seg: CoverageSegment, month: date, plan: PlanSettings) -> int:
    """A month's amount for one coverage: all of it, or under daily proration its share of the month's
    days in force, rounded half up to the cent."""
    if plan.proration != "daily":
        return amount
    last = last_day(month)
    days = (min(seg.end or last, last) - first_priced_day(seg, month, plan)).days + 1
    return (amount * days * 2 + last.day) // (2 * last.day)


def plan_premium(
    segs: list[CoverageSegment], part: PartitionState, month: date, plan: PlanSettings
) -> tuple[int | None, tuple[str, ...]]:
    """What the month owes for these coverages and the rate events that say so; None when a rate is
    not known."""
    total = 0
    rate_ids: list[str] = []
    for seg in segs:
        rate = part.rate_for(seg.plan, seg.tier, month)
        if rate is None:
            return None, ()
        total += segment_premium(seg, rate, month, plan)
        rate_ids.append(rate.event_id)
    return total, tuple(dict.fromkeys(rate_ids))


def expected_premium(account: AccountState, part: PartitionState, month: date, plan: PlanSettings) -> int | None:
    """The premium the enrollment and rate tables call for; None when a rate is not known."""
    return plan_premium(priced_segments(account, month, plan), part, month, plan)[0]


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
        if cobra.is_cobra(seg):
            share = premium
        elif rate.total_cents == 0:
            share = 0
        else:
            share = (premium * rate.employee_cents * 2 + rate.total_cents) // (2 * rate.total_cents)
        employee += share
        employer += premium - share
    return employee + employer, employee, employer
