"""COBRA continuation coverage (42 U.S.C. 300bb-1 to 300bb-8; 26 CFR 54.4980B-8). Pure.

- Premium: at most 102% of the plan cost, 150% in months 19 to 29 of a disability extension.
- Payment: the first payment is due 45 days after the election; later payments are timely within a
  30-day grace period (both plan settings).
- A shortfall no larger than the lesser of $50 or 10% of the amount due counts as full payment unless
  the plan gives notice and a reasonable time to pay: the ledger raises ``cobra_shortfall`` as that
  notice.
"""

from __future__ import annotations

from datetime import date, timedelta

from processor.rules.dates import months_between
from processor.settings import PlanSettings
from processor.state import CoverageSegment


def is_cobra(seg: CoverageSegment) -> bool:
    return seg.status == "cobra"


def premium_percent(seg: CoverageSegment, month: date, plan: PlanSettings) -> int:
    """The percent of the plan cost the month's COBRA premium is."""
    if seg.disability_extension and seg.cobra_start is not None:
        if 19 <= months_between(seg.cobra_start, month) + 1 <= 29:
            return plan.cobra_disability_percent
    return plan.cobra_premium_percent


def payment_deadline(due: date, plan: PlanSettings, cobra: CoverageSegment) -> date:
    """The last day a COBRA month is timely: the later of the due date plus the COBRA grace period and
    the election plus the first-payment period."""
    deadline = due + timedelta(days=plan.cobra_grace_days)
    if cobra.elected_on is not None:
        deadline = max(deadline, cobra.elected_on + timedelta(days=plan.cobra_first_payment_days))
    return deadline


def insignificant_shortfall_cents(amount_due: int, plan: PlanSettings) -> int:
    """The largest shortfall that still counts as full payment: the lesser of the plan's dollar and
    percent limits (default $50 and 10%)."""
    return min(plan.cobra_shortfall_max_cents, amount_due * plan.cobra_shortfall_max_percent // 100)
