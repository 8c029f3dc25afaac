"""Operations: the broadcast events that mark time (a business day, a billing cycle) for the rules."""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from events.base import Event


class DayClosed(Event, frozen=True, kw_only=True, tag="day_closed"):
    """A business day has ended; time-driven rules are decided here, never from the wall clock."""

    BROADCAST: ClassVar[bool] = True

    business_date: date


class BillingCycleClosed(Event, frozen=True, kw_only=True, tag="billing_cycle_closed"):
    """Billing for a coverage month is complete: a covered month with no bill is now a finding."""

    BROADCAST: ClassVar[bool] = True

    cycle_month: date
