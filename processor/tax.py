"""Section 125 and IRC 79 arithmetic: pure functions, integer cents.

Group-term life insurance above $50,000 paid for by the employer is imputed income, at the IRS's
uniform premiums (Table I, IRS Publication 15-B) per $1,000 of excess coverage per month, by the
employee's age attained on the last day of the tax year.
"""

from __future__ import annotations

from events.types import Cents

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
