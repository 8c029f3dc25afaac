"""Month by month, the injected errors of HR's 834s (placed by injections.py): the retroactive change
reported after the month was billed and paid (Retro), and the 834s out of order, late or without the
dependents' changes (Special), with what follows from them.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from events.types import AdjustmentPosted, EnrollmentChanged, Event, RefundIssued
from processor.entrypoints.demo.model import add_months, last_day
from processor.entrypoints.demo.records import Coverage, Member

if TYPE_CHECKING:
    from processor.entrypoints.demo.program import Builder


def late_change(b: Builder, p: Member, month: date) -> list[Event]:
    """The retroactive change HR reports 20 days into the month, after the month was billed and paid.

    Every billed month whose premium the change moves (by the demo's own pricing) is a retroactive
    change, whose premium "before" is the month's premium before the change's first event."""
    r = b.retro.get((p.account_id, month))
    if r is None:
        return []
    billed = sorted(m for a, m in b.billed if a == p.account_id)
    before = {m: b.pricing.premium(p.account_id, m) for m in billed}
    reported = last_day(month) - timedelta(days=1)  # after the agency's remittance of the month
    if r.what == "tier":
        assert r.tier is not None
        events: list[Event] = list(b.change_tier(p, r.change, r.tier, reported))
    else:
        events = list(b.terminate(p, r.change, reported, r.lines))
        if r.lines is None:
            b.ended.add(p.account_id)
    moved = [m for m in billed if b.pricing.premium(p.account_id, m) != before[m]]
    following = add_months(month, 1)
    for m in moved:
        b.retro_changes[(p.account_id, m)] = events[0].event_id
        found = ("retroactive_change", p.account_id, m)
        if not r.settle:
            b.expect(found)
            continue
        assert r.lines is not None
        # billing credits the ended plans' bills; the month's premium is then what it owes, its credit
        # (overpaid: the member keeps other coverage) is refunded to whoever paid
        credits = [AdjustmentPosted(
            event_id=b.eid("adj"), account_id=p.account_id, effective_on=following + timedelta(days=2),
            occurred_at=b.at(following - timedelta(days=10), 13), source="billing-system",
            adjustment_id=f"ADJ{m:%Y%m}-{p.account_id}-{line}", coverage_month=m,
            amount_cents=-b.billed[(p.account_id, m)][line], plan=p.coverages[line].plan,
            reason=f"{line} coverage ended {r.change} (enrollment change {events[0].event_id})",
        ) for line in r.lines]
        b.scheduled_bills.setdefault(following, []).extend(credits)
        credit = -sum(c.amount_cents for c in credits)
        assert b.paid[(p.account_id, m)] == sum(b.billed[(p.account_id, m)].values())
        refunded_on = following + timedelta(days=8)
        issued = RefundIssued(
            event_id=b.eid("refund"), account_id=p.account_id, effective_on=refunded_on,
            occurred_at=b.at(refunded_on, 10), source="accounts-staff", refund_id=f"RF{m:%Y%m}-{p.account_id}-retro",
            payee_id=p.account_id if p.direct_pay else p.agency_id, amount_cents=credit,
            method="check" if p.direct_pay else "ach", reason="premium for coverage ended retroactively",
            coverage_month=m,
        )
        b.scheduled.setdefault(following, []).append(issued)
        b.expect(found, [("resolved", credits[-1].event_id)])
        b.expect(("overpaid", p.account_id, m), [("resolved", issued.event_id)])
    return events


# ---------------------------------------------------------------------------------------------
# HR's 834s out of order, late or without the dependents' changes (Special), and what follows


def hired_late(b: Builder, p: Member) -> bool:
    """Is the member's 834 add sent late (not before the first month, as usual)?"""
    sp = b.special.get(p.account_id)
    return sp is not None and sp.what == "late_hire"


def hr_before(b: Builder, p: Member, month: date, sends: dict[str, date]) -> list[Event]:
    """What HR sends before the month besides the usual hires, terminations and tier changes."""
    sp = b.special.get(p.account_id)
    if sp is None or sp.month != month:
        return []
    if sp.what == "unknown_first":
        # the 834 ending the line after the second month arrives first: the add was dead-lettered and is
        # resent after it (hire, below)
        assert sp.line is not None
        cov = p.coverages[sp.line]
        end = last_day(add_months(month, 1))
        return [b.enrollment(p, "term", "terminate", sp.line, cov, sent_on=sends["terminate"], effective_on=end,
                             begin=cov.begin, end=end)]
    if sp.what == "unknown_never":
        # a tier change of a vision coverage HR never enrolled the member in
        health = p.coverages["health"]
        vision = Coverage("VSP-VISION", health.tier, month)
        return [b.enrollment(p, "chg", "change", "vision", vision, sent_on=sends["change"], effective_on=month,
                             begin=month)]
    if sp.what == "drop_to_emp":
        return list(b.change_tier(p, month, "EMP", sends["change"], family_follows=False))
    if sp.what == "partner_mid_month":
        return list(b.change_tier(p, month + timedelta(days=sp.day - 1), "ESP", sends["change"]))
    return []


def hired(b: Builder, p: Member, events: list[EnrollmentChanged]) -> None:
    """The hire's 834 is out: the termination that came before its add is applied now."""
    sp = b.special.get(p.account_id)
    if sp is not None and sp.what == "unknown_first":
        add = next(e for e in events if e.coverage_line == sp.line and e.relationship == "self")
        b.expect(("unknown_coverage", p.account_id, None), [("resolved", add.event_id)])


def hr_late(b: Builder, p: Member, month: date) -> list[Event]:
    """What HR sends late in the month, after its payments: a late hire's 834 (after the billing cycles
    of its first two months closed), or the dependents' terminations a tier change left out."""
    sp = b.special.get(p.account_id)
    if sp is None:
        return []
    sent_on = last_day(month) - timedelta(days=1)
    if sp.what == "late_hire" and month == add_months(sp.month, 1):
        return list(b.hire(p, sent_on))
    if sp.what == "drop_to_emp" and sp.settle and month == add_months(sp.month, 1):
        # HR ends the dependents' coverage with the tier change: each month's eligibility is resolved
        sent_at = b.at(sent_on)
        events: list[Event] = []
        for d in p.covered_family:
            d.end = sp.month - timedelta(days=1)
            events.append(b.dependent_event(p, d, "term", "terminate", sent_on=sent_on, sent_at=sent_at))
        for m in (sp.month, month):
            b.expect(("eligibility", p.account_id, m), [("resolved", events[-1].event_id)])
        return events
    return []


def catch_up_months(b: Builder, p: Member, month: date) -> list[date]:
    """Earlier months billing bills this month: those of a late hire it missed, when it catches up."""
    sp = b.special.get(p.account_id)
    if sp is not None and sp.what == "late_hire" and sp.settle and month == add_months(sp.month, 2):
        return [sp.month, add_months(sp.month, 1)]
    return []


def caught_up(b: Builder, p: Member, missed: date, first_bill: str) -> None:
    b.expect(("enrolled_not_billed", p.account_id, missed), [("resolved", first_bill)])


def catch_up_payments(b: Builder, p: Member, month: date, trace: str) -> list[Event]:
    """Payroll pays the months billing caught up on with this month's remittance."""
    out: list[Event] = []
    for missed in catch_up_months(b, p, month):
        billed = sum(b.billed[(p.account_id, missed)].values())
        b.paid[(p.account_id, missed)] = billed
        out.append(b.payment_line(p, missed, billed, trace, paid_in=month))
    return out


def pays_unmonthed(b: Builder, p: Member, month: date) -> bool:
    """Does the member's payment for the month name no month (a retiree's check without the stub)?"""
    sp = b.special.get(p.account_id)
    return sp is not None and sp.what == "unmonthed" and sp.month == month
