"""The enrollment handler: a coverage change moves the timeline, places held cash again, and records
on each billed month whose premium it moved that it reached back there. Pure."""

from __future__ import annotations

from events.types import EnrollmentChanged
from processor.rules import coverage, payments, retro
from processor.rules.base import Outcome
from processor.settings import PlanSettings
from processor.state import AccountState, PartitionState


def on_enrollment(account: AccountState, part: PartitionState, e: EnrollmentChanged, plan: PlanSettings) -> Outcome:
    before = retro.billed_premiums(account, part, plan)
    coverage.apply_enrollment(account, e)
    payments.replace_held(account, plan)
    retro.note_changes(
        account, part, plan, before, event_id=e.event_id, change_date=coverage.change_date(e),
        days_back=(e.occurred_at.date() - coverage.change_date(e)).days, cause="enrollment",
    )
    out = Outcome(coverage_changed=True)
    for key, month in account.months.items():
        if month.month is not None:
            out.touch(key)
    return out
