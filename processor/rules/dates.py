"""Calendar arithmetic every rule shares: month ends, month steps. Pure."""

from __future__ import annotations

import calendar
import functools
from datetime import date, timedelta


@functools.lru_cache(maxsize=4096)
def last_day(month: date) -> date:
    """The last day of the month ``month`` falls in."""
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def first_of_month(day: date) -> date:
    return day.replace(day=1)


def next_month(month: date) -> date:
    """The first of the month after ``month``."""
    return last_day(month) + timedelta(days=1)


def add_months(first: date, months: int) -> date:
    """The first of the month ``months`` after (or before, negative) the month of ``first``."""
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def months_between(start: date, month: date) -> int:
    """Whole months from the month of ``start`` to the month of ``month`` (0 for the same month)."""
    return (month.year - start.year) * 12 + month.month - start.month


def same_day_months_later(day: date, months: int) -> date:
    """The same day of the month ``months`` later (the month's last day when it is shorter)."""
    first = add_months(day, months)
    return first.replace(day=min(day.day, last_day(first).day))
