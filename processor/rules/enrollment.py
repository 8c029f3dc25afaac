"""The enrollment handler: a coverage change moves the timeline, places held cash again, and records
on each billed month whose premium it moved that it reached back there. Pure.

The books do not depend on the order enrollment events arrive in: a termination, change or
reinstatement for coverage the ledger has not heard of is kept (``pending_enrollments``) and applied
when that coverage arrives; until then it is an ``unknown_coverage`` discrepancy for the agency
coordinator. A coverage that arrives after the billing cycles of its first months closed (a late new
hire) has each of those months judged, so every covered month whose cycle closed without a bill is
``enrolled_not_billed`` whenever the enrollment arrives.
"""

from __future__ import annotations

import msgspec

from events.types import EnrollmentChanged
from processor.rules import coverage, fsa, payments, retro
from processor.rules.base import Finding, Outcome, month_state
from processor.rules.dates import add_months, first_of_month, last_day
from processor.rules.lifecycle import settle
from processor.settings import PlanSettings
from processor.state import AccountState, PartitionState, month_key

UNKNOWN_PREFIX = "unknown_coverage|coverage:"


def on_enrollment(account: AccountState, part: PartitionState, e: EnrollmentChanged, plan: PlanSettings) -> Outcome:
    out = Outcome(coverage_changed=True)
    out.fsa_changed = fsa.note_participation(account, e, plan)
    known = coverage.segments_of(account, e.member_id, e.coverage_line) or fsa.has_account(account, e.coverage_line)
    if e.action != "add" and not known:
        account.pending_enrollments.append(e)  # the coverage it changes has not arrived (yet)
        _settle_unknown(account, e, out)
        return out
    e = _as_plan_allows(account, e, plan)
    waiting = _take_pending(account, e.member_id, e.coverage_line) if e.action == "add" else []
    # A change moves nothing before the month it takes effect in (a termination: its last covered day,
    # not the coverage's begin it repeats; one month earlier, for a reinstatement extending a segment
    # that ended then): the cost does not grow with the history.
    since = add_months(first_of_month(min(coverage.change_date(c) for c in (e, *waiting))), -1)
    before = retro.billed_premiums(account, part, plan, lambda m: m >= since)
    coverage.apply_enrollment(account, e)
    for kept in waiting:
        coverage.apply_enrollment(account, kept)
    payments.replace_held(account, plan, since)
    retro.note_changes(
        account, part, plan, before, event_id=e.event_id, change_date=coverage.change_date(e),
        days_back=(e.occurred_at.date() - coverage.change_date(e)).days, cause="enrollment",
    )
    for key in _closed_cycle_months(account, part, e, plan):
        out.touch(key)
    for key, month in account.months.items():
        if month.month is not None and month.month >= since:
            out.touch(key)
    _settle_unknown(account, e, out)
    return out


def _as_plan_allows(account: AccountState, e: EnrollmentChanged, plan: PlanSettings) -> EnrollmentChanged:
    """Under ``retroactive_terminations = "unpaid_only"`` a termination reaching back over months whose
    premium was collected ends coverage at the end of the month it was made in instead; what was paid
    for later months is then refunded through the usual findings."""
    if plan.retroactive_terminations != "unpaid_only" or e.action != "terminate":
        return e
    asked = coverage.change_date(e)
    made = last_day(e.occurred_at.date())
    if asked >= made:
        return e
    collected = any(m.month is not None and asked < m.month <= made and m.paid_cents > 0
                    for m in account.months.values())
    return msgspec.structs.replace(e, benefit_end=made) if collected else e


def _take_pending(account: AccountState, member_id: str, line: str) -> list[EnrollmentChanged]:
    """The kept changes of this coverage, in effective order (then as upstream made them)."""
    mine = [p for p in account.pending_enrollments if (p.member_id, p.coverage_line) == (member_id, line)]
    if mine:
        account.pending_enrollments = [p for p in account.pending_enrollments if p not in mine]
    return sorted(mine, key=lambda p: (coverage.change_date(p), p.occurred_at))


def _closed_cycle_months(account: AccountState, part: PartitionState, e: EnrollmentChanged,
                         plan: PlanSettings) -> list[str]:
    """Months of this coverage whose billing cycle already closed get a month to be judged in; returns
    the keys of the months it created."""
    closed_through = part.billing_closed_through
    if closed_through is None or e.relationship != "self":
        return []
    earliest = part.billing_closed_from or closed_through
    created = []
    for seg in coverage.segments_of(account, e.member_id, e.coverage_line):
        m = max(first_of_month(coverage.priced_begin(seg, plan)), earliest)
        last = closed_through if seg.end is None else min(first_of_month(seg.end), closed_through)
        while m <= last:
            if month_key(m) not in account.months:
                month_state(account, m)
                created.append(month_key(m))
            m = add_months(m, 1)
    return created


def _settle_unknown(account: AccountState, trigger: EnrollmentChanged, out: Outcome) -> None:
    """One ``unknown_coverage`` per coverage with kept changes; resolved once the coverage arrives."""
    by_coverage: dict[tuple[str, str], list[EnrollmentChanged]] = {}
    for p in account.pending_enrollments:
        by_coverage.setdefault((p.member_id, p.coverage_line), []).append(p)
    found = {}
    for (member, line), kept in by_coverage.items():
        key = f"{UNKNOWN_PREFIX}{member}:{line}"
        what = ", ".join(f"{p.action} {p.event_id} (effective {coverage.change_date(p)})" for p in kept)
        found[key] = Finding(
            kind="unknown_coverage", key=key, month=None, payer_id=kept[0].agency_id, expected_cents=0,
            actual_cents=0, cause_event_ids=tuple(p.event_id for p in kept),
            explanation=f"{what} for {member}'s {line} coverage ({kept[0].plan}), which the ledger has no"
            " enrollment for: kept, and applied when the coverage arrives",
            action=f"send the enrollment (834 add) of {member}'s {line} coverage, or withdraw the change",
            actor="agency_coordinator",
        )
    settle(account, trigger, out, found, lambda dkey: dkey.startswith(UNKNOWN_PREFIX))
