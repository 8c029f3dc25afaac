"""Aging of what is owed, charge by charge, in the plan's buckets (``PlanSettings.aging_buckets_days``).

Each charge of a member-month (a bill, or an adjustment that adds to it) is aged from its own date:
its due date, or the day it was issued when that is later (a bill for September sent on December 1 is
aged from December 1, not from September 1). A month's credits (payments applied, credits posted,
less refunds paid back) settle its oldest charges first; what is left of each charge is outstanding.
A month whose credits exceed its charges is a credit, not aged. So, for any set of member-months,

    outstanding (the aged total) + credits (negative) = balance (billed + adjustments - paid + refunds)

which every report prints, so the aging visibly ties to the balance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from processor.settings import PlanSettings
from processor.state import AccountState, MonthState
from replay.statements import bill_payer, bucket_labels, bucket_of


@dataclass(frozen=True, slots=True)
class AgedCharge:
    account_id: str
    payer_id: str
    coverage_month: date
    source: str  # bill | adjustment
    ref: str  # bill id or adjustment id
    event_id: str
    amount_cents: int
    due_on: date  # the due date the charge names (an adjustment: the day it was posted)
    aged_from: date  # the later of the due date and the day it was issued
    outstanding_cents: int
    days_past_due: int
    bucket: str


@dataclass(frozen=True, slots=True)
class Credit:
    account_id: str
    payer_id: str
    coverage_month: date
    cents: int  # negative: the month's credits exceed its charges


@dataclass(slots=True)
class Aging:
    as_of: date
    buckets: list[str]
    charges: list[AgedCharge] = field(default_factory=list)  # with something outstanding
    credits: list[Credit] = field(default_factory=list)
    balance_cents: int = 0  # the balance of every member-month considered, credits included

    @property
    def outstanding_cents(self) -> int:
        return sum(c.outstanding_cents for c in self.charges)

    @property
    def credits_cents(self) -> int:
        return sum(c.cents for c in self.credits)

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(self.buckets, 0)
        for c in self.charges:
            out[c.bucket] += c.outstanding_cents
        return out

    def by_payer(self) -> dict[str, dict[str, int]]:
        """Per payer: outstanding per bucket, and its ``credits`` and ``balance``."""
        out: dict[str, dict[str, int]] = {}
        for c in self.charges:
            row = out.setdefault(c.payer_id, {**dict.fromkeys(self.buckets, 0), "credits": 0})
            row[c.bucket] += c.outstanding_cents
        for cr in self.credits:
            out.setdefault(cr.payer_id, {**dict.fromkeys(self.buckets, 0), "credits": 0})["credits"] += cr.cents
        for row in out.values():
            row["balance"] = sum(row[b] for b in self.buckets) + row["credits"]
        return dict(sorted(out.items()))

    def by_account(self) -> dict[str, dict[str, int]]:
        """Per member account: outstanding per bucket, credits and balance."""
        out: dict[str, dict[str, int]] = {}
        for c in self.charges:
            row = out.setdefault(c.account_id, {**dict.fromkeys(self.buckets, 0), "credits": 0})
            row[c.bucket] += c.outstanding_cents
        for cr in self.credits:
            out.setdefault(cr.account_id, {**dict.fromkeys(self.buckets, 0), "credits": 0})["credits"] += cr.cents
        for row in out.values():
            row["balance"] = sum(row[b] for b in self.buckets) + row["credits"]
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(), "buckets": self.buckets, "totals_cents": self.totals(),
            "outstanding_cents": self.outstanding_cents, "credits_cents": self.credits_cents,
            "balance_cents": self.balance_cents,
            "items": [asdict(c) for c in self.charges], "credits": [asdict(c) for c in self.credits],
            "by_payer": self.by_payer(), "by_account": self.by_account(),
        }


def month_charges(
    account: AccountState, m: MonthState, issued_on: Mapping[str, date],
) -> tuple[list[tuple[date, date, str, str, str, int]], int]:
    """(aged_from, due, source, ref, event id, amount) of each charge, oldest first, and the month's
    credit pool (payments applied + credits posted - refunds paid back)."""
    charges = []
    pool = m.paid_cents - m.refunded_cents
    for b in m.bills:
        if b.amount_cents <= 0:
            pool -= b.amount_cents
            continue
        issued = issued_on.get(b.event_id, b.due_on)
        charges.append((max(b.due_on, issued), b.due_on, "bill", b.bill_id, b.event_id, b.amount_cents))
    for a in m.adjustments:
        if a.amount_cents <= 0:
            pool -= a.amount_cents
            continue
        fallback = m.due_on or (m.month or date.min)
        posted = issued_on.get(a.event_id, fallback)
        charges.append((max(posted, fallback), posted, "adjustment", a.adjustment_id, a.event_id, a.amount_cents))
    if pool < 0:
        # refunds paid out beyond what is now paid (a payment reversed after its credit was refunded):
        # the money paid back is owed again, from the month's due date
        fallback = m.due_on or (m.month or date.min)
        charges.append((fallback, fallback, "refund", "refunds", "", -pool))
        pool = 0
    charges.sort(key=lambda c: (c[0], c[3]))
    return charges, pool


def aging(
    accounts: Iterable[AccountState], plan: PlanSettings, as_of: date, *, issued_on: Mapping[str, date] | None = None,
    payer_id: str | None = None, through: date | None = None,
) -> Aging:
    """Age the member-months of ``accounts`` (only those addressed to ``payer_id``, when given) as of a day."""
    issued = issued_on or {}
    out = Aging(as_of=as_of, buckets=bucket_labels(plan.aging_buckets_days))
    for account in accounts:
        for m in account.months.values():
            if m.month is None or (through is not None and m.month > through):
                continue
            payer = bill_payer(account, m)
            if payer_id is not None and payer != payer_id:
                continue
            balance = m.balance_cents
            if not m.bills and not m.adjustments and balance == 0:
                continue
            out.balance_cents += balance
            charges, left = month_charges(account, m, issued)
            aged = 0
            for aged_from, due, source, ref, event_id, amount in charges:
                settled = min(amount, left)
                left -= settled
                rest = amount - settled
                if rest:
                    days = (as_of - aged_from).days
                    aged += rest
                    out.charges.append(AgedCharge(
                        account_id=account.account_id, payer_id=payer, coverage_month=m.month, source=source,
                        ref=ref, event_id=event_id, amount_cents=amount, due_on=due, aged_from=aged_from,
                        outstanding_cents=rest, days_past_due=days, bucket=bucket_of(days, plan.aging_buckets_days),
                    ))
            if balance < 0:
                out.credits.append(Credit(account.account_id, payer, m.month, balance))
            # the identity every report prints, per month: what is aged plus the credit is the balance
            assert aged + min(balance, 0) == balance, f"aging of {account.account_id} {m.month} does not tie"
    out.charges.sort(key=lambda c: (c.payer_id, c.account_id, c.coverage_month, c.aged_from))
    out.credits.sort(key=lambda c: (c.payer_id, c.account_id, c.coverage_month))
    return out
