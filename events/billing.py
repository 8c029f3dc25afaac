"""Rates and billing: what a coverage month costs, what is billed for it, and corrections to a bill."""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from events.base import Cents, Event


class RatePublished(Event, frozen=True, kw_only=True, tag="rate_published"):
    """Monthly premium for a plan and tier over a range of coverage months (first days)."""

    BROADCAST: ClassVar[bool] = True

    rate_id: str
    plan: str
    tier: str
    month_from: date
    month_through: date | None = None
    total_cents: Cents
    employee_cents: Cents
    employer_cents: Cents


class PremiumBilled(Event, frozen=True, kw_only=True, tag="premium_billed"):
    bill_id: str
    coverage_month: date
    plan: str
    tier: str
    amount_cents: Cents
    due_on: date
    agency_id: str | None = None


class AdjustmentPosted(Event, frozen=True, kw_only=True, tag="adjustment_posted"):
    """A correction to a month's billed amount (signed cents); never an edit of history."""

    adjustment_id: str
    coverage_month: date
    amount_cents: Cents
    reason: str
    plan: str | None = None
