"""A discrepancy's lifecycle: diff what a scope shows now against what is open there, and emit the
difference as ``discrepancy_opened``, ``discrepancy_amount_changed``, ``discrepancy_resolved`` or
``discrepancy_superseded``. Pure; the one place these events are made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from events.types import (
    DiscrepancyAmountChanged,
    DiscrepancyOpened,
    DiscrepancyResolved,
    DiscrepancySuperseded,
    InputEvent,
    OutputEvent,
)
from processor.rules.base import Finding, Outcome, discrepancy_id, envelope
from processor.state import AccountState, OpenDiscrepancy, month_of_key


@dataclass(frozen=True, slots=True)
class Retroactive:
    """The trigger is a retroactive change for the scope: what disappears is explained, not fixed.

    ``change`` describes it ("terminate", "rate change"...); ``retro_key`` is the key of the
    retroactive_change finding that carries the difference."""

    change: str
    retro_key: str


def settle(
    account: AccountState, trigger: InputEvent, out: Outcome, found: dict[str, Finding],
    in_scope: Callable[[str], bool], retroactive: Retroactive | None = None, row: str | None = None,
) -> None:
    """Make the open discrepancies of a scope (the keys ``in_scope`` accepts) agree with ``found``.
    ``row``: every key in scope is about that row (a month or a remittance), so only its findings are
    looked at, not the account's."""
    if not found and not account.open:
        return  # the common case: nothing wrong, nothing open
    superseded: list[OutputEvent] = []
    # in key order, not the order they were opened: an account loaded from its month rows (each holding
    # its month's findings) must close them in the same order as the account kept in memory
    for dkey in sorted(account.open if row is None else account.open_at(row)):
        if dkey in found or not in_scope(dkey):
            continue
        open_d = account.pop_open(dkey)
        out.dirty_months.add(month_of_key(dkey))  # its month's row holds it
        if retroactive is not None and open_d.kind != "retroactive_change":
            open_retro = account.open.get(retroactive.retro_key)
            by = (open_retro.discrepancy_id if open_retro is not None
                  else discrepancy_id(account.account_id, retroactive.retro_key, trigger.event_id)
                  if retroactive.retro_key in found else None)
            superseded.append(DiscrepancySuperseded(
                event_id=f"{open_d.discrepancy_id}:superseded", **envelope(account, trigger, open_d.coverage_month),
                discrepancy_id=open_d.discrepancy_id, kind=open_d.kind, coverage_month=open_d.coverage_month,
                superseding_event_ids=(trigger.event_id,), superseded_by=by,
                explanation=f"{open_d.kind} explained by the retroactive {retroactive.change} {trigger.event_id}",
            ))
            continue
        out.emitted.append(DiscrepancyResolved(
            event_id=f"{open_d.discrepancy_id}:resolved", **envelope(account, trigger, open_d.coverage_month),
            discrepancy_id=open_d.discrepancy_id, kind=open_d.kind, coverage_month=open_d.coverage_month,
            resolving_event_ids=(trigger.event_id,),
            explanation=f"{open_d.kind} closed by {type(trigger).__name__} {trigger.event_id}",
        ))
    for dkey, f in found.items():
        current = account.open.get(dkey)
        if current is None:
            _open(account, trigger, out, dkey, f)
        elif (current.expected_cents, current.actual_cents, current.action) != (
                f.expected_cents, f.actual_cents, f.action):
            _change(account, trigger, out, current, f)
    out.emitted.extend(superseded)  # after the retroactive_change they point to was opened


def _open(account: AccountState, trigger: InputEvent, out: Outcome, dkey: str, f: Finding) -> None:
    did = discrepancy_id(account.account_id, dkey, trigger.event_id)
    opened = OpenDiscrepancy(
        discrepancy_id=did, kind=f.kind, key=dkey, coverage_month=f.month, payer_id=f.payer_id,
        expected_cents=f.expected_cents, actual_cents=f.actual_cents,
        cause_event_ids=tuple(dict.fromkeys((*f.cause_event_ids, trigger.event_id))),
        explanation=f.explanation, action=f.action, actor=f.actor, opened_by=trigger.event_id,
    )
    account.put_open(opened)
    out.dirty_months.add(month_of_key(dkey))
    out.emitted.append(DiscrepancyOpened(
        event_id=f"{did}:opened", **envelope(account, trigger, f.month), discrepancy_id=did, kind=f.kind,
        coverage_month=f.month, payer_id=f.payer_id, expected_cents=f.expected_cents,
        actual_cents=f.actual_cents, cause_event_ids=opened.cause_event_ids, explanation=f.explanation,
        action=f.action, actor=f.actor,  # type: ignore[arg-type]
    ))


def _change(account: AccountState, trigger: InputEvent, out: Outcome, current: OpenDiscrepancy, f: Finding) -> None:
    """Still open with other amounts (or, for a retroactive change, another action): say so."""
    out.emitted.append(DiscrepancyAmountChanged(
        event_id=f"{current.discrepancy_id}:changed:{trigger.event_id}",
        **envelope(account, trigger, current.coverage_month), discrepancy_id=current.discrepancy_id,
        kind=current.kind, coverage_month=current.coverage_month,
        previous_expected_cents=current.expected_cents, previous_actual_cents=current.actual_cents,
        expected_cents=f.expected_cents, actual_cents=f.actual_cents, changing_event_ids=(trigger.event_id,),
        explanation=f.explanation, action=f.action,
    ))
    current.expected_cents, current.actual_cents = f.expected_cents, f.actual_cents
    current.explanation, current.action = f.explanation, f.action
    current.cause_event_ids = tuple(dict.fromkeys((*current.cause_event_ids, *f.cause_event_ids, trigger.event_id)))
    out.changed_discrepancies.append(current)
    out.dirty_months.add(month_of_key(current.key))


def screen_findings(account: AccountState, key: str, found: dict[str, Finding]) -> None:
    """Drop from ``found`` (one month's findings) those a person dismissed that still show the same
    amounts; a dismissed finding that changed or went away no longer holds back its return."""
    for closed_id in account.closed_at(key):
        closed = account.closed[closed_id]
        if not closed.suppress:
            continue
        finding = found.get(closed.key)
        if finding is not None and (finding.expected_cents, finding.actual_cents) == (
                closed.expected_cents, closed.actual_cents):
            del found[closed.key]
        else:
            closed.suppress = False
