"""What every rule module shares: the outcome of folding one event, refusals, findings, ids.

Below all the rules, so no rule module imports another one's internals to get these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Any

from events.types import DiscrepancyKind, InputEvent, OutputEvent
from processor.settings import PlanSettings
from processor.state import (
    PAYMENT_APPLIED,
    AccountState,
    CoverageSegment,
    MonthState,
    OpenDiscrepancy,
    PartitionState,
    PaymentLine,
    month_key,
)

LEDGER_SOURCE = "benefits-ledger"


class Rejected(Exception):
    """The event is valid but cannot be applied to this account; it goes to the dead-letter topic."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class Outcome:
    """What one event changed on one account: months to reconcile and re-project, payer cash deltas,
    output events. A handler names the months it touched (``touch``); the fold reconciles them.

    A plain class, not a dataclass: the fold makes one per event, and compiled (mypyc) a dataclass's
    generated ``__init__`` stays an interpreted function, about ten times slower."""

    __slots__ = ("changed_discrepancies", "coverage_changed", "derived", "dirty_months", "emitted", "fsa_changed",
                 "partition_changed", "payer_unapplied_delta", "touched")

    def __init__(self, *, coverage_changed: bool = False) -> None:
        self.touched: dict[str, None] = {}  # month keys to reconcile, in order
        self.dirty_months: set[str] = set()  # stored rows changed: months, "remittance:<id>" books
        self.coverage_changed = coverage_changed
        self.payer_unapplied_delta: dict[str, int] = {}
        self.emitted: list[OutputEvent] = []
        self.changed_discrepancies: list[OpenDiscrepancy] = []
        self.fsa_changed = False  # the account's flexible spending accounts moved (projection fsa_account)
        # events the ledger posts itself, through the outbox (a cash application's payment, remittance lines)
        self.derived: list[InputEvent] = []
        self.partition_changed = False  # an account event moved the partition's state (an index of due dates)

    def touch(self, key: str) -> None:
        self.touched[key] = None

    def unapplied(self, payer: str, amount: int) -> None:
        """Unapplied cash on the payer's account moves by ``amount`` (negative: cash placed)."""
        self.payer_unapplied_delta[payer] = self.payer_unapplied_delta.get(payer, 0) + amount


@dataclass(frozen=True, slots=True)
class Finding:
    """A discrepancy a month (or a remittance) shows now; reconcile diffs findings against what is open."""

    kind: DiscrepancyKind
    key: str
    month: date | None
    payer_id: str | None
    expected_cents: int
    actual_cents: int
    cause_event_ids: tuple[str, ...]
    explanation: str
    action: str
    actor: str


def discrepancy_id(account_id: str, key: str, opened_by: str) -> str:
    """Deterministic: the same account, finding and opening event always give the same id."""
    return hashlib.sha256(f"{account_id}|{key}|{opened_by}".encode()).hexdigest()[:24]


def envelope(account: AccountState, trigger: InputEvent, month: date | None) -> dict[str, Any]:
    """The fields every output event shares: its account, the coverage month it is about (or the
    trigger's business date), the trigger's own time (never the clock) and the trigger as its cause."""
    return {
        "account_id": account.account_id,
        "effective_on": month or trigger.effective_on,
        "occurred_at": trigger.occurred_at,
        "source": LEDGER_SOURCE,
        "causation_id": trigger.event_id,
    }


def month_state(account: AccountState, month: date | None) -> MonthState:
    """The account's month, created empty the first time an event names it."""
    key = month_key(month)
    state = account.months.get(key)
    if state is None:
        state = account.months[key] = MonthState(month=month)
    return state


class MonthView:
    """One month as the finders see it, computed once per reconcile (a plain class, as Outcome is)."""

    __slots__ = ("account", "applied", "cobra", "key", "m", "month", "net_billed", "paid", "part", "plan", "priced")

    def __init__(self, *, account: AccountState, part: PartitionState, plan: PlanSettings, key: str,
                 month: MonthState, m: date | None, priced: list[CoverageSegment], cobra: CoverageSegment | None,
                 net_billed: int, applied: list[PaymentLine], paid: int) -> None:
        self.account = account
        self.part = part
        self.plan = plan
        self.key = key
        self.month = month
        self.m = m  # the coverage month (None: payments that named no month)
        self.priced = priced  # the subscriber's coverage that prices the month
        self.cobra = cobra  # its COBRA continuation coverage, if priced as COBRA
        self.net_billed = net_billed  # billed + adjustments
        self.applied = applied  # payments applied to the month
        self.paid = paid  # their sum

    @staticmethod
    def of(account: AccountState, part: PartitionState, plan: PlanSettings, key: str,
           priced: list[CoverageSegment]) -> MonthView:
        month = account.months[key]
        cobra = next((s for s in priced if s.status == "cobra"), None)
        applied = [p for p in month.payments if p.status == PAYMENT_APPLIED]
        return MonthView(
            account=account, part=part, plan=plan, key=key, month=month, m=month.month, priced=priced,
            cobra=cobra, net_billed=month.billed_cents + month.adjusted_cents, applied=applied,
            paid=sum(p.amount_cents for p in applied),
        )
