"""Retroactive changes: an enrollment or rate change that reaches back into months already billed.

Each billed month whose premium the change moves records a ``RetroLine`` (the premium before and
after). While the month's net bill differs from the premium now in force, the month shows one
``retroactive_change``: the premium before the change as a whole (before the first of its events),
the premium after it, what was billed, and the refund, credit or bill that follows. It explains (and
supersedes) the ``wrong_rate`` or ``billed_not_enrolled`` the same difference would otherwise raise.
A change that reaches further back than ``retroactive_limit_days`` needs approval. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from events.money import format_cents as cents
from events.types import EnrollmentChanged, InputEvent, RatePublished
from processor.rules.base import Finding, MonthView
from processor.rules.lifecycle import Retroactive
from processor.rules.pricing import expected_premium, rate_covers
from processor.settings import PlanSettings
from processor.state import AccountState, MonthState, PartitionState, RetroLine

# Kinds a retroactive change explains: while the month's bill differs from the premium the corrected
# enrollment calls for, that one difference is the retroactive_change, not these.
EXPLAINED_BY_RETRO = frozenset({"billed_not_enrolled", "wrong_rate"})


def billed_premiums(
    account: AccountState, part: PartitionState, plan: PlanSettings,
    reaches: Callable[[date], bool] | None = None,
) -> dict[str, int | None]:
    """The premium each already-billed month (that the change ``reaches``, all by default) carries now,
    before an enrollment or rate change is applied."""
    return {
        key: expected_premium(account, part, m.month, plan)
        for key, m in account.months.items()
        if m.month is not None and m.bills and (reaches is None or reaches(m.month))
    }


def note_changes(
    account: AccountState, part: PartitionState, plan: PlanSettings, before: dict[str, int | None], *,
    event_id: str, change_date: date, days_back: int, cause: str,
) -> list[str]:
    """Record on each billed month whose premium the change moved that it reached back there; returns
    the keys of the months whose premium moved."""
    moved = []
    for key, was in before.items():
        month = account.months[key]
        assert month.month is not None
        now = expected_premium(account, part, month.month, plan)
        if now == was:
            continue
        moved.append(key)
        if was is None or now is None:
            continue  # a rate that was not known, or is no longer: nothing to compare
        month.retro.append(RetroLine(
            event_id=event_id, change_date=change_date, premium_before_cents=was, premium_after_cents=now,
            days_back=days_back, beyond_limit=days_back > plan.retroactive_limit_days, cause=cause,
        ))
    return moved


def open_lines(month: MonthState) -> list[RetroLine]:
    """The lines of the retroactive change the month shows now."""
    return month.retro[month.retro_from:]


def settled(month: MonthState) -> None:
    """The month's bill agrees with its premium again: later lines start a new change."""
    month.retro_from = len(month.retro)


def retroactive_for(trigger: InputEvent, month: MonthState, key: str) -> Retroactive | None:
    """Is ``trigger`` a retroactive change for this month (so what it makes disappear is superseded)?"""
    if isinstance(trigger, RatePublished):
        return Retroactive("rate change", f"retroactive_change|{key}")
    if isinstance(trigger, EnrollmentChanged) and any(r.event_id == trigger.event_id for r in month.retro):
        return Retroactive(trigger.action, f"retroactive_change|{key}")
    return None


def find_retroactive_change(v: MonthView) -> list[Finding]:
    month, m = v.month, v.m
    lines = open_lines(month)
    if m is None or not lines or month.expected_cents is None or v.net_billed == month.expected_cents:
        return []
    after, billed = month.expected_cents, v.net_billed
    before = lines[0].premium_before_cents
    difference = billed - after
    beyond = [r for r in lines if r.beyond_limit]
    causes = tuple(dict.fromkeys(r.event_id for r in lines))
    kinds = sorted({r.cause for r in lines})
    what = " and ".join(kinds) + (" change" if len(causes) == 1 else " changes")
    effective = ", ".join(sorted({str(r.change_date) for r in lines}))
    explanation = (f"{what} {', '.join(causes)} effective {effective} moved the premium for {m:%Y-%m} from"
                   f" {cents(before)} to {cents(after)}; billed {cents(billed)}")
    if beyond:
        explanation += (f"; reaches {max(r.days_back for r in beyond)} days back, beyond the plan's"
                        f" {v.plan.retroactive_limit_days}-day retroactive limit")
    action = (f"refund or credit {cents(difference)}" if difference > 0 else f"bill {cents(-difference)}")
    action += f" for {m:%Y-%m}" + ("; needs approval: beyond the retroactive limit" if beyond else "")
    return [Finding(
        kind="retroactive_change", key=f"retroactive_change|{v.key}", month=m,
        payer_id=month.bills[0].agency_id if month.bills else None,
        expected_cents=after, actual_cents=billed, cause_event_ids=causes,
        explanation=explanation, action=action, actor="billing",
    )]


def rate_reaches(account: AccountState, event: RatePublished) -> bool:
    """Could this rate publication move the premium of a month the account has already been billed for?

    Cheap filter: a billed month in the rate's range and a subscriber coverage in the rate's plan.
    """
    if not any(s.relationship == "self" and s.plan == event.plan for s in account.coverages):
        return False
    return any(m.month is not None and m.bills and rate_covers(event, m.month) for m in account.months.values())
