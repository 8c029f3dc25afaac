"""An enrollment whose sender left out the tier (834 HD05 absent, not derivable).

The ledger keeps the tier it has for the member's coverage line, else takes ``unknown`` (no rate is
published for it, so nothing is priced by accident) and raises an eligibility discrepancy for the
agency coordinator naming where the element was missing.
"""

from __future__ import annotations

import msgspec

from processor.rules.coverage import UNKNOWN_TIER
from processor.rules.pricing import expected_premium
from tests.unit.builders import FEB, HEALTH, JAN, Ledger, bill, enroll, rate


def _no_tier(**kw: object) -> object:
    return msgspec.structs.replace(enroll(**kw), tier=None,  # type: ignore[arg-type]
                                   missing_elements=("HD05 (file 834_x.txt, line 40, segment 23)",))


def test_a_change_without_a_tier_keeps_the_tier_in_force_for_that_coverage_line() -> None:
    ledger = Ledger()
    ledger.apply(rate(120_000, tier="FAM"), enroll(tier="FAM"))
    ledger.apply(_no_tier(action="change", begin=FEB, plan="UMP-PLUS"))  # type: ignore[arg-type]
    segments = sorted(ledger.account().coverages, key=lambda s: s.begin)
    assert [(s.begin, s.plan, s.tier) for s in segments] == [(JAN, HEALTH, "FAM"), (FEB, "UMP-PLUS", "FAM")]


def test_an_add_without_a_tier_for_a_coverage_the_ledger_never_had_is_unknown_and_not_priced() -> None:
    known, unknown = Ledger(), Ledger()
    known.apply(rate(78_412, tier="EMP"), enroll(tier="EMP"))
    unknown.apply(rate(78_412, tier="EMP"), _no_tier())  # type: ignore[arg-type]
    [segment] = unknown.account().coverages
    assert segment.tier == UNKNOWN_TIER
    assert expected_premium(known.account(), known.part, JAN, known.plan) == 78_412
    assert expected_premium(unknown.account(), unknown.part, JAN, unknown.plan) is None, "no rate is known for it"


def test_a_coverage_of_unknown_tier_is_an_eligibility_discrepancy_naming_the_missing_element() -> None:
    ledger = Ledger()
    ledger.apply(rate(78_412, tier="EMP"), _no_tier(), bill(78_412))  # type: ignore[arg-type]
    finding = ledger.one_open("eligibility")
    assert finding.actor == "agency_coordinator"
    assert "HD05 (file 834_x.txt, line 40, segment 23)" in finding.explanation
    assert "send the coverage level (834 HD05)" in finding.action
