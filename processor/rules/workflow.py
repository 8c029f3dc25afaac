"""People working the queue: the rules of every action on a discrepancy. Pure: no I/O, clock or logging.

Every action (assign, note, wait on the agency or the member, waive, write off, approve, reject,
dismiss, reopen) is an input event on the discrepancy's account, folded here in archive order like any
other event, so live processing and replay agree on the queue as it stood at any recorded time.

The fold's table (processor/rules/fold.py) sends every ``DiscrepancyAction`` to ``apply_workflow_event``;
``reconcile`` screens its findings (``lifecycle.screen_findings``) while the account has closed
discrepancies: a finding a person dismissed stays closed while it shows the same amounts.

Money moves only through adjustments: a waiver or write-off posts ``AdjustmentLine``s on the
discrepancy's month that make the finding go away, so the balance agrees with the closed discrepancy.
An action that cannot apply raises ``Rejected`` and changes nothing (it is folded on a copy first).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import cast

from events.money import format_cents as cents
from events.types import (
    DiscrepancyAction,
    DiscrepancyAssigned,
    DiscrepancyClosed,
    DiscrepancyDismissed,
    DiscrepancyNoted,
    DiscrepancyReopened,
    DiscrepancyResolved,
    DiscrepancyStatusSet,
    DiscrepancyWaived,
    DiscrepancyWrittenOff,
    InputEvent,
    RetroChangeApproved,
    RetroChangeRejected,
    WaiverApproved,
    WaiverRejected,
)
from processor.rules.base import LEDGER_SOURCE, Outcome, Rejected
from processor.rules.coverage import priced_segments
from processor.rules.payments import owed_by_deductions
from processor.rules.pricing import plan_premium
from processor.rules.reconcile import reconcile
from processor.settings import PlanSettings
from processor.state import (
    PAYMENT_APPLIED,
    AccountState,
    AdjustmentLine,
    MonthState,
    OpenDiscrepancy,
    PartitionState,
    PendingApproval,
    decode_account,
    encode_state,
    month_key,
    month_of_key,
)

SUPERVISOR = "supervisor"
SPECIALIST = "specialist"
AUDITOR = "auditor"
COORDINATOR = "agency_coordinator"
STAFF = frozenset({SPECIALIST, SUPERVISOR})  # who works the queue and moves money

# Kinds whose difference an adjustment on the month can take away (waive or write off).
ADJUSTABLE_KINDS = frozenset({
    "underpaid", "overpaid", "refund_due", "cobra_shortfall", "missing_payment", "wrong_rate",
    "billed_not_enrolled", "retroactive_change",
})
LAST_REASON_CHARS_MAX = 500  # the last note or reason kept on the discrepancy (the archive keeps all)
_AMOUNT_SEARCH_CENTS = 10**13  # beyond the ledger's amount bound (events.money.AMOUNT_CENTS_MAX)


def agency_of(account: AccountState, payer_id: str | None) -> str | None:
    """The agency a discrepancy belongs to: a payer account's own payer; else the agency of the
    subscriber coverage that began last (ties: the greatest agency id); else the payer named on the
    discrepancy. The stores compute the same for their queue queries."""
    if account.account_id.startswith("payer:"):
        return account.account_id.removeprefix("payer:")
    own = [s for s in account.coverages if s.relationship == "self"]
    if own:
        return max(own, key=lambda s: (s.begin, s.agency_id)).agency_id
    return payer_id


def apply_workflow_event(
    account: AccountState, part: PartitionState, event: DiscrepancyAction, plan: PlanSettings
) -> Outcome:
    """Fold one action. It is folded on a copy of the account, which replaces the account's contents
    only when the action applies, so a Rejected action changes nothing."""
    handler = _HANDLERS.get(type(event))
    if handler is None:  # pragma: no cover - every DiscrepancyAction type has a handler
        raise AssertionError(f"no workflow rule for {type(event).__name__}")
    if event.role == AUDITOR:
        raise Rejected("an auditor reads everything and changes nothing", field="role")
    work = decode_account(encode_state(account))
    out = Outcome()
    handler(work, part, event, plan, out)
    _mark_changed_findings(account, work, out)
    for name in AccountState.__struct_fields__:
        setattr(account, name, getattr(work, name))
    account.forget_indexes()
    return out


def _mark_changed_findings(before: AccountState, after: AccountState, out: Outcome) -> None:
    """A finding about a month is stored with the month's row: the months whose findings the action
    changed (worked, closed, reopened) are written."""
    for dkey in before.open.keys() | after.open.keys():
        if before.open.get(dkey) != after.open.get(dkey):
            out.dirty_months.add(month_of_key(dkey))
    for did in before.closed.keys() | after.closed.keys():
        was, now = before.closed.get(did), after.closed.get(did)
        if was != now:
            d = now if now is not None else was
            assert d is not None
            out.dirty_months.add(month_of_key(d.key))


def closing_adjustments(
    account: AccountState, part: PartitionState, plan: PlanSettings, d: OpenDiscrepancy
) -> list[tuple[str | None, int]]:
    """The adjustment lines (plan or None, signed cents) that take the discrepancy's difference away:
    what a waiver, a write-off or an approved retroactive change posts. Rejected for a kind no
    adjustment closes (close it with a reason instead)."""
    m = d.coverage_month
    month = account.months.get(month_key(m))
    if d.kind not in ADJUSTABLE_KINDS or m is None or month is None:
        raise Rejected(f"no adjustment closes a {d.kind}: close it with a reason, or post the event that fixes"
                       " it (a payment, a refund, a cash application)", field="discrepancy_id")
    net_billed = month.billed_cents + month.adjusted_cents
    if d.kind in ("underpaid", "overpaid", "refund_due", "cobra_shortfall"):
        return _nonzero([(None, _settling_billed(month, plan) - net_billed)])
    if d.kind == "missing_payment":
        return _nonzero([(None, -net_billed)])
    lines: list[tuple[str | None, int]] = []
    in_force = priced_segments(account, m, plan)
    billed_plans = sorted({b.plan for b in month.bills})
    if d.kind == "wrong_rate":
        billed_plans = [d.key.split("|", 2)[2]]
    for plan_id in billed_plans:
        billed = sum(b.amount_cents for b in month.bills if b.plan == plan_id) + sum(
            a.amount_cents for a in month.adjustments if a.plan == plan_id)
        segs = [s for s in in_force if s.plan == plan_id]
        if not segs:
            if d.kind != "wrong_rate":
                lines.append((plan_id, -billed))
            continue
        if d.kind == "billed_not_enrolled":
            continue
        premium, _rates = plan_premium(segs, part, m, plan)
        if premium is None:
            raise Rejected(f"no rate is known for {plan_id} in {m:%Y-%m}: the premium to bill is unknown",
                           field="discrepancy_id")
        lines.append((plan_id, premium - billed))
    if d.kind == "retroactive_change":
        if month.expected_cents is None:
            raise Rejected(f"the premium for {m:%Y-%m} is unknown", field="discrepancy_id")
        residual = month.expected_cents - net_billed - sum(amount for _, amount in lines)
        lines.append((None, residual))
    return _nonzero(lines)


def needs_approval(amount_cents: int, plan: PlanSettings) -> bool:
    """A waiver or write-off above the plan's limit (either sign) waits for a supervisor."""
    return abs(amount_cents) > plan.waiver_approval_cents


def beyond_retroactive_limit(account: AccountState, d: OpenDiscrepancy) -> bool:
    month = account.months.get(month_key(d.coverage_month))
    return month is not None and any(r.beyond_limit for r in month.retro)


# ---------------------------------------------------------------------------------------------
# The rules, one per action


def _assigned(account: AccountState, part: PartitionState, e: DiscrepancyAssigned, plan: PlanSettings,
              out: Outcome) -> None:
    d = _open(account, e)
    _require(e, STAFF, "assign work")
    if e.role == SPECIALIST and (e.assignee not in (None, e.user) or d.assignee not in (None, e.user)):
        raise Rejected("a specialist takes or gives back their own work; a supervisor assigns it to others",
                       field="assignee")
    d.assignee = e.assignee
    _acted(d, e, e.reason or (f"assigned to {e.assignee}" if e.assignee else "unassigned"), out)


def _noted(account: AccountState, part: PartitionState, e: DiscrepancyNoted, plan: PlanSettings,
           out: Outcome) -> None:
    d = _open(account, e)
    _require(e, STAFF | {COORDINATOR}, "add a note")
    _coordinator_agency(account, d, e)
    d.notes += 1
    _acted(d, e, e.note, out)


def _status_set(account: AccountState, part: PartitionState, e: DiscrepancyStatusSet, plan: PlanSettings,
                out: Outcome) -> None:
    d = _open(account, e)
    _require(e, STAFF | {COORDINATOR}, "set what a discrepancy waits on")
    _coordinator_agency(account, d, e)
    if e.role == COORDINATOR and e.work_status != "open":
        raise Rejected("an agency coordinator answers an item (back to the accounts staff: open)",
                       field="work_status")
    d.work_status = e.work_status
    _acted(d, e, e.reason or f"status {e.work_status}", out)


def _waived(account: AccountState, part: PartitionState, e: DiscrepancyWaived | DiscrepancyWrittenOff,
            plan: PlanSettings, out: Outcome) -> None:
    d = _open(account, e)
    action = "waive" if isinstance(e, DiscrepancyWaived) else "write_off"
    _require(e, STAFF, action.replace("_", " "))
    if d.pending is not None:
        raise Rejected(f"a {d.pending.action.replace('_', '-')} of {cents(d.pending.amount_cents)} by"
                       f" {d.pending.requested_by} ({d.pending.event_id}) waits for approval", field="discrepancy_id")
    if d.kind == "retroactive_change" and beyond_retroactive_limit(account, d):
        raise Rejected("the change reaches back beyond the plan's retroactive limit: a supervisor approves or"
                       " rejects it", field="discrepancy_id")
    lines = closing_adjustments(account, part, plan, d)
    total = sum(amount for _, amount in lines)
    if total != e.amount_cents:
        raise Rejected(f"the adjustment that closes {d.discrepancy_id} is {cents(total)}, not"
                       f" {cents(e.amount_cents)}: its amounts moved; look at it again", field="amount_cents")
    if needs_approval(total, plan):
        d.pending = PendingApproval(action=action, amount_cents=total, requested_by=e.user, event_id=e.event_id,
                                    reason=e.reason)
        _acted(d, e, e.reason, out)
        return
    _close_by_adjustment(account, part, plan, d, lines, e, "waived" if action == "waive" else "written_off",
                         e.user, e.reason, (e.event_id,), out)


def _waiver_decided(account: AccountState, part: PartitionState, e: WaiverApproved | WaiverRejected,
                    plan: PlanSettings, out: Outcome) -> None:
    d = _open(account, e)
    _require(e, {SUPERVISOR}, "approve or reject a waiver")
    pending = d.pending
    if pending is None or pending.event_id != e.request_event_id:
        raise Rejected(f"no waiver or write-off {e.request_event_id} waits for approval on {d.discrepancy_id}",
                       field="request_event_id")
    if e.user == pending.requested_by:
        raise Rejected(f"{e.user} asked for it: another supervisor approves or rejects it", field="user")
    if isinstance(e, WaiverRejected):
        d.pending = None
        _acted(d, e, e.reason, out)
        return
    lines = closing_adjustments(account, part, plan, d)
    total = sum(amount for _, amount in lines)
    if total != pending.amount_cents:
        raise Rejected(f"the amounts moved since the request: {cents(pending.amount_cents)} was asked, it takes"
                       f" {cents(total)} now; reject it and ask again", field="request_event_id")
    status = "waived" if pending.action == "waive" else "written_off"
    reason = pending.reason + (f" (approved by {e.user}: {e.reason})" if e.reason else f" (approved by {e.user})")
    _close_by_adjustment(account, part, plan, d, lines, e, status, pending.requested_by, reason,
                         (pending.event_id, e.event_id), out)


def _retro_approved(account: AccountState, part: PartitionState, e: RetroChangeApproved, plan: PlanSettings,
                    out: Outcome) -> None:
    d = _retro(account, e)
    lines = closing_adjustments(account, part, plan, d)
    total = sum(amount for _, amount in lines)
    if total != e.amount_cents:
        raise Rejected(f"billing the change takes {cents(total)}, not {cents(e.amount_cents)}: its amounts moved;"
                       " look at it again", field="amount_cents")
    _adjust(account, part, plan, d, lines, e, out)
    _acted(d, e, e.reason or "retroactive change approved", out)


def _retro_rejected(account: AccountState, part: PartitionState, e: RetroChangeRejected, plan: PlanSettings,
                    out: Outcome) -> None:
    d = _retro(account, e)
    _dismiss(account, d, e, f"retroactive change rejected by {e.user}: {e.reason}", out)


def _dismissed(account: AccountState, part: PartitionState, e: DiscrepancyDismissed, plan: PlanSettings,
               out: Outcome) -> None:
    d = _open(account, e)
    _require(e, STAFF, "close a discrepancy")
    if d.pending is not None:
        raise Rejected(f"a {d.pending.action.replace('_', '-')} ({d.pending.event_id}) waits for approval:"
                       " approve or reject it first", field="discrepancy_id")
    _dismiss(account, d, e, f"closed by {e.user}: {e.reason}", out)


def _reopened(account: AccountState, part: PartitionState, e: DiscrepancyReopened, plan: PlanSettings,
              out: Outcome) -> None:
    _require(e, STAFF, "reopen a discrepancy")
    closed = account.closed.get(e.discrepancy_id)
    if closed is None:
        where = ("it is open" if any(d.discrepancy_id == e.discrepancy_id for d in account.open.values())
                 else "no person closed it")
        raise Rejected(f"discrepancy {e.discrepancy_id} cannot be reopened on {account.account_id}: {where}",
                       field="discrepancy_id")
    key = month_of_key(closed.key)
    month = account.months.get(key)
    if month is None or month.month is None:
        raise Rejected(f"a {closed.kind} that belongs to no coverage month cannot be reopened", field="discrepancy_id")
    newer = account.open.get(closed.key)
    if newer is not None:
        raise Rejected(f"the finding is open again as {newer.discrepancy_id}", field="discrepancy_id")
    account.pop_closed(e.discrepancy_id)
    for line in [a for a in month.adjustments if a.adjustment_id in closed.adjustment_ids]:
        month.adjustments.append(AdjustmentLine(adjustment_id=f"{line.adjustment_id}:reversed", plan=line.plan,
                                                amount_cents=-line.amount_cents, event_id=e.event_id))
    reconcile(account, part, plan, key, cast(InputEvent, e), out)
    fresh = account.open.get(closed.key)
    if fresh is None:
        raise Rejected(f"the {closed.kind} of {closed.coverage_month:%Y-%m} is not there any more: nothing to reopen",
                       field="discrepancy_id")
    fresh.assignee = closed.assignee
    fresh.notes = closed.notes
    _acted(fresh, e, f"reopened {closed.discrepancy_id}: {e.reason}", out)


_HANDLERS: dict[type[DiscrepancyAction], Callable[..., None]] = {
    DiscrepancyAssigned: _assigned,
    DiscrepancyNoted: _noted,
    DiscrepancyStatusSet: _status_set,
    DiscrepancyWaived: _waived,
    DiscrepancyWrittenOff: _waived,
    WaiverApproved: _waiver_decided,
    WaiverRejected: _waiver_decided,
    RetroChangeApproved: _retro_approved,
    RetroChangeRejected: _retro_rejected,
    DiscrepancyDismissed: _dismissed,
    DiscrepancyReopened: _reopened,
}


# ---------------------------------------------------------------------------------------------
# Helpers


def _open(account: AccountState, e: DiscrepancyAction) -> OpenDiscrepancy:
    for d in account.open.values():
        if d.discrepancy_id == e.discrepancy_id:
            return d
    closed = account.closed.get(e.discrepancy_id)
    if closed is not None:
        raise Rejected(f"discrepancy {e.discrepancy_id} was closed ({closed.work_status}) by {closed.last_user}:"
                       " reopen it first", field="discrepancy_id")
    raise Rejected(f"discrepancy {e.discrepancy_id} is not open on account {account.account_id}",
                   field="discrepancy_id")


def _retro(account: AccountState, e: DiscrepancyAction) -> OpenDiscrepancy:
    d = _open(account, e)
    _require(e, {SUPERVISOR}, "approve or reject a retroactive change")
    if d.kind != "retroactive_change":
        raise Rejected(f"discrepancy {d.discrepancy_id} is a {d.kind}, not a retroactive_change",
                       field="discrepancy_id")
    if not beyond_retroactive_limit(account, d):
        raise Rejected(f"the change reaches back no further than the plan's retroactive limit: no approval is"
                       f" needed, billing corrects {d.coverage_month:%Y-%m}", field="discrepancy_id")
    return d


def _require(e: DiscrepancyAction, roles: set[str] | frozenset[str], what: str) -> None:
    if e.role not in roles:
        raise Rejected(f"a {e.role.replace('_', ' ')} may not {what}", field="role")


def _coordinator_agency(account: AccountState, d: OpenDiscrepancy, e: DiscrepancyAction) -> None:
    if e.role != COORDINATOR:
        return
    agency = agency_of(account, d.payer_id)
    if e.agency_id is None or e.agency_id != agency:
        raise Rejected(f"discrepancy {d.discrepancy_id} belongs to agency {agency}, not to {e.agency_id}",
                       field="agency_id")


def _acted(d: OpenDiscrepancy, e: DiscrepancyAction, reason: str, out: Outcome) -> None:
    d.last_user = e.user
    d.last_reason = reason[:LAST_REASON_CHARS_MAX]
    d.last_event_id = e.event_id
    out.changed_discrepancies.append(d)


def _dismiss(account: AccountState, d: OpenDiscrepancy, e: DiscrepancyAction, explanation: str, out: Outcome) -> None:
    """Close without moving money; the same finding with the same amounts stays closed (screen_findings)."""
    account.pop_open(d.key)
    d.work_status = "closed"
    d.suppress = True
    d.pending = None
    account.put_closed(d)
    out.emitted.append(_closed_event(account, d, e, "closed", (e.event_id,), e.user, e.reason, 0, explanation))
    _acted(d, e, e.reason, out)


def _adjust(account: AccountState, part: PartitionState, plan: PlanSettings, d: OpenDiscrepancy,
            lines: list[tuple[str | None, int]], e: DiscrepancyAction, out: Outcome) -> tuple[str, ...]:
    """Post the adjustment lines on the discrepancy's month and reconcile it; the discrepancy must be
    gone afterwards (resolved by ``e``), else Rejected."""
    key = month_key(d.coverage_month)
    month = account.months[key]
    ids = tuple(f"{e.event_id}:{i}" for i in range(len(lines)))
    for adjustment_id, (plan_id, amount) in zip(ids, lines, strict=True):
        month.adjustments.append(AdjustmentLine(adjustment_id=adjustment_id, plan=plan_id, amount_cents=amount,
                                                event_id=e.event_id))
    reconcile(account, part, plan, key, cast(InputEvent, e), out)
    if d.key in account.open:
        raise Rejected(f"an adjustment of {cents(sum(a for _, a in lines))} does not close the {d.kind} of"
                       f" {d.coverage_month}: close it with a reason", field="discrepancy_id")
    return ids


def _close_by_adjustment(
    account: AccountState, part: PartitionState, plan: PlanSettings, d: OpenDiscrepancy,
    lines: list[tuple[str | None, int]], e: DiscrepancyAction, status: str, user: str, reason: str,
    closing: tuple[str, ...], out: Outcome,
) -> None:
    """Waived or written off: the adjustment closes the finding, and the resolution ``_reconcile``
    announced is this closing instead."""
    ids = _adjust(account, part, plan, d, lines, e, out)
    total = sum(amount for _, amount in lines)
    resolved = next(i for i, ev in enumerate(out.emitted)
                    if isinstance(ev, DiscrepancyResolved) and ev.discrepancy_id == d.discrepancy_id)
    what = "waived" if status == "waived" else "written off"
    out.emitted[resolved] = _closed_event(
        account, d, e, status, closing, user, reason, total,
        f"{d.kind}{_month_text(d.coverage_month)} {what} by {user} with an adjustment of {cents(total)}: {reason}",
    )
    d.work_status = status
    d.pending = None
    d.adjustment_ids = ids
    account.put_closed(d)
    _acted(d, e, reason, out)


def _closed_event(
    account: AccountState, d: OpenDiscrepancy, e: DiscrepancyAction, status: str, closing: tuple[str, ...],
    user: str, reason: str, adjustment: int, explanation: str,
) -> DiscrepancyClosed:
    return DiscrepancyClosed(
        event_id=f"{d.discrepancy_id}:closed", account_id=account.account_id,
        effective_on=d.coverage_month or e.effective_on, occurred_at=e.occurred_at, source=LEDGER_SOURCE,
        causation_id=e.event_id, discrepancy_id=d.discrepancy_id, kind=d.kind, coverage_month=d.coverage_month,
        status=status,  # type: ignore[arg-type]
        closing_event_ids=closing, user=user, reason=reason, adjustment_cents=adjustment, explanation=explanation,
    )


def _month_text(month: date | None) -> str:
    return f" for {month:%Y-%m}" if month is not None else ""


def _settling_billed(month: MonthState, plan: PlanSettings) -> int:
    """The net billed amount at which the month's applied payments (less refunds) are exactly what is
    owed. Monthly payments owe the net billed amount itself; payroll deductions owe their share of it
    (payments.owed_by_deductions), rounded, so this searches the integer that comes closest."""
    applied = [p for p in month.payments if p.status == PAYMENT_APPLIED]
    net_paid = sum(p.amount_cents for p in applied) - month.refunded_cents

    def owed(net_billed: int) -> int:
        assert month.month is not None, "a coverage month"
        return owed_by_deductions(applied, net_billed, plan, month.month)

    low, high = -_AMOUNT_SEARCH_CENTS, _AMOUNT_SEARCH_CENTS
    while low < high:  # the least net billed amount that owes at least what was paid (owed is monotone)
        mid = (low + high) // 2
        if owed(mid) >= net_paid:
            high = mid
        else:
            low = mid + 1
    return min((low, low - 1), key=lambda nb: (abs(owed(nb) - net_paid), -nb))


def _nonzero(lines: list[tuple[str | None, int]]) -> list[tuple[str | None, int]]:
    kept = [line for line in lines if line[1] != 0]
    if not kept:
        raise Rejected("nothing to adjust: the difference is already zero", field="discrepancy_id")
    return kept
