"""Eligibility: the tier must match the covered people, and a dependent's coverage ends at the age
limit (PHSA 2714: a health plan covers a child to 26; other lines' limits are plan settings). Pure.

A coverage line is judged only when the sender reports its dependents at all (an 834 with dependent
loops): a ledger told only of subscribers cannot know who else is covered.
"""

from __future__ import annotations

from datetime import date

from events.money import format_cents as cents
from processor.rules.base import Finding, MonthView
from processor.rules.coverage import UNKNOWN_TIER
from processor.rules.dates import last_day, same_day_months_later
from processor.rules.pricing import first_priced_day, segment_premium
from processor.settings import PlanSettings, TierRule
from processor.state import CoverageSegment, PartitionState

PARTNERS = ("spouse", "domestic_partner")


def aged_out(birth: date, limit: int, on: date) -> date | None:
    """The last day of coverage when a dependent born on ``birth`` has passed the age limit by ``on``:
    the end of the month of the birthday; None while within the limit."""
    through = last_day(same_day_months_later(birth, limit * 12))
    return through if on > through else None


def fits(rule: TierRule, partners: int, children: int) -> bool:
    dependents = partners + children
    return (
        (rule.partner != "none" or partners == 0) and (rule.partner != "required" or partners >= 1)
        and (rule.children != "none" or children == 0) and (rule.children != "required" or children >= 1)
        and dependents >= rule.dependents_min and (rule.dependents_max is None or dependents <= rule.dependents_max)
        and partners <= 1
    )


def _premium(seg: CoverageSegment, tier: str, part: PartitionState, month: date, plan: PlanSettings) -> int | None:
    rate = part.rate_for(seg.plan, tier, month)
    return None if rate is None else segment_premium(seg, rate, month, plan)


def find_eligibility(v: MonthView) -> list[Finding]:
    m, plan, account = v.m, v.plan, v.account
    if m is None or not v.priced:
        return []
    found = []
    for seg in v.priced:
        line = seg.coverage_line
        if seg.tier == UNKNOWN_TIER:
            found.append(_unknown_tier(v, seg, m))
            continue
        reported = [s for s in account.coverages if s.relationship != "self" and s.coverage_line == line]
        if not reported:
            continue
        start = first_priced_day(seg, m, plan)
        covered = [s for s in reported if s.begin <= start and (s.end is None or s.end >= start)]
        problems, causes = [], [seg.event_id]
        limit = plan.child_age_limits.get(line)
        eligible = []
        for d in covered:
            through = (aged_out(d.birth_date, limit, start)
                       if limit is not None and d.relationship == "child" and d.birth_date is not None else None)
            if through is not None:
                problems.append(f"{d.member_id} reached the age limit of {limit} for {line} coverage; it ended"
                                f" {through}")
                causes.append(d.event_id)
            else:
                eligible.append(d)
        partners = sum(1 for d in eligible if d.relationship in PARTNERS)
        children = sum(1 for d in eligible if d.relationship == "child")
        rule = plan.tiers.get(seg.tier)
        right_tier = seg.tier
        if rule is not None and not fits(rule, partners, children):
            who = ", ".join(f"{d.member_id} ({d.relationship})" for d in eligible) or "no dependents"
            problems.append(f"tier {seg.tier} does not match who is covered: the subscriber and {who}")
            causes += [d.event_id for d in eligible]
            right_tier = next((t for t, r in plan.tiers.items() if fits(r, partners, children)
                               and plan.tiers.get(t) is not None and v.part.rate_for(seg.plan, t, m) is not None),
                              seg.tier)
        if not problems:
            continue
        actual = _premium(seg, seg.tier, v.part, m, plan)
        expected = _premium(seg, right_tier, v.part, m, plan)
        found.append(Finding(
            kind="eligibility", key=f"eligibility|{v.key}|{line}", month=m, payer_id=seg.agency_id,
            expected_cents=expected if expected is not None else 0, actual_cents=actual if actual is not None else 0,
            cause_event_ids=tuple(dict.fromkeys(causes)),
            explanation=f"{line} coverage ({seg.plan}/{seg.tier}) in {m:%Y-%m}: " + "; ".join(problems)
            + (f"; the covered people call for tier {right_tier} ({cents(expected)})"
               if right_tier != seg.tier and expected is not None else ""),
            action=(f"correct the tier to {right_tier}" if right_tier != seg.tier else "correct the tier")
            + " or end the coverage of dependents who are not eligible; send the corrected 834",
            actor="agency_coordinator",
        ))
    return found


def _unknown_tier(v: MonthView, seg: CoverageSegment, m: date) -> Finding:
    """A coverage whose sender never said its tier, and the ledger had none to keep: nothing can price it."""
    where = "; ".join(seg.missing_elements) or "the enrollment carried no tier"
    return Finding(
        kind="eligibility", key=f"eligibility|{v.key}|{seg.coverage_line}", month=m, payer_id=seg.agency_id,
        expected_cents=0, actual_cents=0, cause_event_ids=(seg.event_id,),
        explanation=f"{seg.coverage_line} coverage ({seg.plan}) of {seg.member_id} in {m:%Y-%m} has no known"
        f" coverage level (tier): {where}; it cannot be priced",
        action="send the coverage level (834 HD05) for this coverage", actor="agency_coordinator",
    )
