"""Section 125 (cafeteria plan) and IRC 79 (group-term life): which share of a premium is post-tax,
and the month's imputed income. Pure, integer cents.

- A domestic partner who is not a tax dependent: the partner's share of the premium (the subscriber's
  tier minus the tier without the partner, ``partner_tier_without``) is paid after tax, and its
  employer-paid part is imputed income. A pre-tax deduction for such coverage is ``tax_treatment``.
- Group-term life above $50,000 paid by the employer is imputed income at the IRS's uniform premiums
  (Table I, IRS Publication 15-B) per $1,000 of excess coverage per month, by the age attained on the
  last day of the tax year, less what the employee paid for it after tax.
"""

from __future__ import annotations

from datetime import date

from events.money import format_cents as cents
from events.types import Cents
from processor.rules.base import Finding, MonthView
from processor.rules.coverage import in_force_all
from processor.rules.pricing import first_priced_day, prorated
from processor.settings import PlanSettings
from processor.state import AccountState, CoverageSegment, PartitionState

GTL_EXCLUSION_CENTS: Cents = 5_000_000  # IRC 79(a): the first $50,000 of coverage is excluded

# (age attained through, cents per $1,000 of coverage per month); the last band is 70 and older.
TABLE_I: tuple[tuple[int, int], ...] = (
    (24, 5), (29, 6), (34, 8), (39, 9), (44, 10), (49, 15), (54, 23), (59, 43), (64, 66), (69, 127),
    (200, 206),
)


def table_i_cents_per_thousand(age: int) -> int:
    """Monthly cost per $1,000 of coverage for an employee of this age (at the end of the tax year)."""
    if age < 0:
        raise ValueError(f"age {age} is negative")
    return next(rate for through, rate in TABLE_I if age <= through)


def gtl_imputed_cents(coverage_cents: Cents, age: int, employee_paid_cents: Cents = 0) -> Cents:
    """One month's imputed income for group-term life coverage of ``coverage_cents``: the Table I cost
    of the coverage above $50,000, rounded half up to the cent, less what the employee paid for it
    after tax that month (never below zero)."""
    excess = coverage_cents - GTL_EXCLUSION_CENTS
    if excess <= 0:
        return 0
    rate = table_i_cents_per_thousand(age)
    cost = (excess * rate * 2 + 100_000) // 200_000  # $1,000 = 100,000 cents
    return max(0, cost - employee_paid_cents)


def non_dependent_partners(
    account: AccountState, month: date, plan: PlanSettings, priced: list[CoverageSegment],
) -> list[CoverageSegment]:
    """Domestic partners who are not tax dependents and whom the month's premium prices: covered on
    the first day a subscriber's coverage of the same line is priced for in the month (a partner added
    on the 15th of a month priced at the tier in force on the 1st is not in that month's premium)."""
    if not any(s.relationship == "domestic_partner" for s in account.coverages):
        return []
    found = []
    for s in in_force_all(account, month, plan):
        if s.relationship != "domestic_partner" or s.tax_dependent:
            continue
        for seg in priced:
            start = first_priced_day(seg, month, plan)
            if seg.coverage_line == s.coverage_line and s.begin <= start and (s.end is None or s.end >= start):
                found.append(s)
                break
    return found


def tax_split(
    account: AccountState, part: PartitionState, month: date, priced: list[CoverageSegment], plan: PlanSettings,
) -> tuple[int | None, int | None]:
    """The month's post-tax share of the employee's payroll deductions and its imputed income.

    When the tier without the partner has no rate, the whole coverage is the partner's share (nothing
    can be separated). Under daily proration each coverage's share is prorated like its premium. Only
    active employees' coverage is paid through payroll; (None, None) while a rate or a needed birth
    year is not known.
    """
    partners = non_dependent_partners(account, month, plan, priced)
    post_tax = imputed = 0
    for seg in priced:
        if seg.status != "active":
            continue
        rate = part.rate_for(seg.plan, seg.tier, month)
        if rate is None:
            return None, None
        start = first_priced_day(seg, month, plan)
        if any(p.coverage_line == seg.coverage_line and p.begin <= start and (p.end is None or p.end >= start)
               for p in partners):
            without_tier = plan.partner_tier_without.get(seg.tier)
            without = part.rate_for(seg.plan, without_tier, month) if without_tier is not None else None
            if without is None:
                post_tax += prorated(rate.employee_cents, seg, month, plan)
                imputed += prorated(rate.employer_cents, seg, month, plan)
            else:
                post_tax += prorated(max(0, rate.employee_cents - without.employee_cents), seg, month, plan)
                imputed += prorated(max(0, rate.employer_cents - without.employer_cents), seg, month, plan)
        if seg.coverage_line != "life":
            continue
        paid_after_tax = rate.employee_cents if plan.life_contributions_post_tax else 0
        post_tax += paid_after_tax
        if seg.coverage_amount_cents is not None and seg.coverage_amount_cents > GTL_EXCLUSION_CENTS:
            if seg.birth_year is None:
                return None, None
            imputed += gtl_imputed_cents(seg.coverage_amount_cents, month.year - seg.birth_year, paid_after_tax)
    return post_tax, imputed


def find_tax_treatment(v: MonthView) -> list[Finding]:
    """A pre-tax deduction where the coverage says post-tax: a non-dependent domestic partner's share,
    or COBRA or retiree coverage, which the member pays directly after tax (IRC 125 covers employees'
    salary reductions only)."""
    m, month = v.m, v.month
    if m is None:
        return []
    pre_tax = [p for p in v.applied if p.tax_treatment == "pre_tax"]
    if not pre_tax:
        return []
    amount = sum(p.amount_cents for p in pre_tax)
    partners = non_dependent_partners(v.account, m, v.plan, v.priced)
    direct = [s for s in v.priced if s.status in ("cobra", "retiree")]
    reasons, causes = [], [p.event_id for p in pre_tax]
    if partners:
        split = (f" ({cents(month.post_tax_cents)} post-tax, {cents(month.imputed_income_cents)} imputed income)"
                 if month.post_tax_cents is not None and month.imputed_income_cents is not None else "")
        reasons.append(f"the coverage includes {', '.join(s.member_id for s in partners)}, a domestic partner"
                       " who is not a tax dependent: that share is post-tax (IRC 125) and its employer-paid"
                       " value is imputed income" + split)
        causes += [s.event_id for s in partners]
    if direct:
        reasons.append(f"the month is {' and '.join(sorted({s.status for s in direct}))} coverage, which the"
                       " member pays after tax: a cafeteria plan takes only an employee's salary reductions")
        causes += [s.event_id for s in direct]
    if not reasons:
        return []
    return [Finding(
        kind="tax_treatment", key=f"tax_treatment|{v.key}", month=m, payer_id=pre_tax[-1].payer_id,
        expected_cents=0, actual_cents=amount, cause_event_ids=tuple(causes),
        explanation=f"{cents(amount)} for {m:%Y-%m} was deducted pre-tax, but " + "; and ".join(reasons),
        action=("take the partner's share after tax and report the employer-paid value as imputed income"
                if partners else "report the payment as after-tax; correct the payroll deduction's tax treatment"),
        actor="payroll",
    )]
