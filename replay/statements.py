"""Statements as of any (E, R): what the ledger knew at recorded time R about coverage months up to E.

The replay stops after each partition's last event recorded at or before R (the recorded-time axis);
the statement then reports only coverage months whose first day is on or before E (the effective axis).
Everything here reads the replayed fold state; no amount is computed by rules of its own except the
sums and the aging buckets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from processor.settings import PlanSettings
from processor.state import PAYMENT_APPLIED, AccountState, MonthState
from projections.model import DiscrepancyRow
from replay.fold import ReplayResult


class TimeParseError(ValueError):
    pass


_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%d %b %Y", "%d %B %Y", "%b %d %Y", "%B %d %Y")


def _parse_date(text: str) -> date | None:
    cleaned = text.replace(",", " ")
    cleaned = " ".join(cleaned.split())
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(cleaned, fmt).date()
        except ValueError:
            continue
    return None


def _month_end(year: int, month: int) -> date:
    """Last day of a month; a month outside 1-12 (``2026-13``, ``2026-00``) is an error, never rolled over."""
    if not 1 <= month <= 12 or not 1 <= year <= 9998:
        raise TimeParseError(f"{year:04d}-{month:02d} is not a month (months are 01 to 12)")
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return nxt - timedelta(days=1)


def parse_known_at(text: str | None, *, tz: str = "UTC", now: datetime | None = None) -> datetime:
    """Recorded time R, leniently: empty or ``now``; a date (end of that day in the plan's time zone);
    ``YYYY-MM`` (end of that month); an ISO date-time (naive means the plan's time zone). Aware result."""
    zone = ZoneInfo(tz)
    if text is None or text.strip().lower() in ("", "now"):
        return (now or datetime.now(UTC)).astimezone(zone)
    raw = text.strip()
    month = re.fullmatch(r"(\d{4})-(\d{1,2})", raw)
    if month:
        day = _month_end(int(month[1]), int(month[2]))
        return datetime.combine(day, time.max, tzinfo=zone)
    day_only = _parse_date(raw)
    if day_only is not None:
        return datetime.combine(day_only, time.max, tzinfo=zone)
    try:
        value = datetime.fromisoformat(raw.replace(" ", "T", 1) if re.match(r"\d{4}-\d\d-\d\d \d", raw) else raw)
    except ValueError as exc:
        raise TimeParseError(f"cannot read {text!r} as a date or time (try 2026-03-31 or 2026-03-31T17:00Z)"
                             ) from exc
    return value.replace(tzinfo=zone) if value.tzinfo is None else value


def parse_through(text: str | None) -> date | None:
    """Effective date E: coverage months starting on or before it are reported. ``YYYY-MM`` means that
    month; a date means the months starting on or before it; empty means every month."""
    if text is None or not text.strip():
        return None
    raw = text.strip()
    month = re.fullmatch(r"(\d{4})-(\d{1,2})", raw)
    if month:
        return _month_end(int(month[1]), int(month[2]))
    day = _parse_date(raw)
    if day is None:
        try:
            day = datetime.fromisoformat(raw).date()
        except ValueError as exc:
            raise TimeParseError(f"cannot read {text!r} as a date (try 2026-03 or 2026-03-31)") from exc
    return day


@dataclass(frozen=True, slots=True)
class StatementLine:
    coverage_month: date
    due_on: date | None
    billed_cents: int
    adjustments_cents: int
    paid_cents: int
    refunds_cents: int
    balance_cents: int
    unapplied_cents: int = 0


@dataclass(slots=True)
class Statement:
    """One member account's or one paying agency's statement."""

    kind: str  # member | payer
    id: str
    lines: list[StatementLine] = field(default_factory=list)
    unapplied_cents: int = 0

    @property
    def billed_cents(self) -> int:
        return sum(x.billed_cents for x in self.lines)

    @property
    def adjustments_cents(self) -> int:
        return sum(x.adjustments_cents for x in self.lines)

    @property
    def paid_cents(self) -> int:
        return sum(x.paid_cents for x in self.lines)

    @property
    def refunds_cents(self) -> int:
        return sum(x.refunds_cents for x in self.lines)

    @property
    def balance_cents(self) -> int:
        return sum(x.balance_cents for x in self.lines)

    def totals(self) -> dict[str, int]:
        return {"billed_cents": self.billed_cents, "adjustments_cents": self.adjustments_cents,
                "paid_cents": self.paid_cents, "refunds_cents": self.refunds_cents,
                "balance_cents": self.balance_cents, "unapplied_cents": self.unapplied_cents}


@dataclass(slots=True)
class Report:
    known_at: datetime
    known_at_input: str | None
    through: date | None
    through_input: str | None
    timezone: str
    events_replayed: int
    last_recorded_at: datetime | None
    members: list[Statement]
    payers: list[Statement]
    open_discrepancies: list[DiscrepancyRow]
    aging_buckets: list[str]
    aging: list[Any]  # replay.aging.AgedCharge: each charge with something outstanding
    discrepancies: list[DiscrepancyRow] = field(default_factory=list)  # opened by R, open or resolved
    aging_detail: Any = None  # replay.aging.Aging: the same, with credits and the balance it ties to

    def aging_totals(self) -> dict[str, int]:
        totals = dict.fromkeys(self.aging_buckets, 0)
        for item in self.aging:
            totals[item.bucket] += item.outstanding_cents
        return totals


def bucket_labels(buckets: tuple[int, ...]) -> list[str]:
    """``not yet due``, then one label per plan bucket (default 0-30, 31-60, 61-90, 91-120 days past
    due) and the open-ended last one (over 120 days)."""
    labels = ["not yet due"]
    low = 0
    for high in buckets:
        labels.append(f"{low}-{high} days")
        low = high + 1
    labels.append(f"over {buckets[-1]} days" if buckets else "past due")
    return labels


def bucket_of(days_past_due: int, buckets: tuple[int, ...]) -> str:
    labels = bucket_labels(buckets)
    if days_past_due < 0:
        return labels[0]
    for i, high in enumerate(buckets):
        if days_past_due <= high:
            return labels[i + 1]
    return labels[-1]


def _in_range(m: MonthState, through: date | None) -> bool:
    return m.month is not None and (through is None or m.month <= through)


def bill_payer(account: AccountState, m: MonthState) -> str:
    """Who a month's bill is addressed to: its agency, or the member (direct pay)."""
    agency = next((b.agency_id for b in m.bills if b.agency_id), None)
    return agency or account.account_id


def member_statement(account: AccountState, through: date | None) -> Statement:
    st = Statement(kind="member", id=account.account_id)
    for m in sorted((m for m in account.months.values() if _in_range(m, through)), key=lambda m: m.month or date.min):
        assert m.month is not None
        st.lines.append(StatementLine(
            coverage_month=m.month, due_on=m.due_on, billed_cents=m.billed_cents,
            adjustments_cents=m.adjusted_cents, paid_cents=m.paid_cents, refunds_cents=m.refunded_cents,
            balance_cents=m.balance_cents, unapplied_cents=m.unapplied_cents,
        ))
    st.unapplied_cents = sum(x.unapplied_cents for x in st.lines)
    return st


def payer_statements(
    accounts: list[AccountState], through: date | None, payer_cash: dict[str, int], only: str | None = None,
) -> list[Statement]:
    """Per paying agency and coverage month: billed to it (with the month's adjustments), paid by it
    (payments applied to a month), refunded to it (a month's credit paid back), and its unapplied cash.
    Direct-pay members are their own payer and appear here only when asked for by id."""
    sums: dict[str, dict[date, list[int]]] = {}  # payer -> month -> [billed, adjusted, paid, refunded]
    due: dict[tuple[str, date], date | None] = {}
    for account in accounts:
        for m in account.months.values():
            if not _in_range(m, through) or m.month is None:
                continue
            if m.bills:
                payer = bill_payer(account, m)
                if only is None and payer == account.account_id:
                    pass  # direct pay: on the member statement
                elif only is None or payer == only:
                    cell = sums.setdefault(payer, {}).setdefault(m.month, [0, 0, 0, 0])
                    cell[0] += m.billed_cents
                    cell[1] += m.adjusted_cents
                    due[(payer, m.month)] = m.due_on
            for p in m.payments:
                if p.status != PAYMENT_APPLIED:
                    continue
                if only is None and p.payer_id == account.account_id:
                    continue
                if only is not None and p.payer_id != only:
                    continue
                cell = sums.setdefault(p.payer_id, {}).setdefault(m.month, [0, 0, 0, 0])
                cell[2] += p.amount_cents
            for r in m.refunds:
                if r.returned_by is not None:
                    continue  # the refund came back: the credit is the payer's again
                if (only is None and r.payee_id == account.account_id) or (only is not None and r.payee_id != only):
                    continue
                cell = sums.setdefault(r.payee_id, {}).setdefault(m.month, [0, 0, 0, 0])
                cell[3] += r.amount_cents
    out = []
    for payer in sorted(sums if only is None else {only}):
        st = Statement(kind="payer", id=payer, unapplied_cents=payer_cash.get(payer, 0))
        for month, (billed, adjusted, paid, refunded) in sorted(sums.get(payer, {}).items()):
            st.lines.append(StatementLine(
                coverage_month=month, due_on=due.get((payer, month)), billed_cents=billed,
                adjustments_cents=adjusted, paid_cents=paid, refunds_cents=refunded,
                balance_cents=billed + adjusted - paid + refunded,
            ))
        out.append(st)
    return out


def build_report(
    res: ReplayResult, plan: PlanSettings, *, known_at: datetime, through: date | None,
    known_at_input: str | None = None, through_input: str | None = None,
    account_id: str | None = None, payer_id: str | None = None, issued_on: dict[str, date] | None = None,
) -> Report:
    """Statements, open discrepancies and aging from a replay that stopped at ``known_at``."""
    as_of_day = known_at.astimezone(ZoneInfo(plan.timezone)).date()
    if account_id is not None:
        accounts = [res.accounts[account_id]] if account_id in res.accounts else []
    else:
        accounts = sorted(res.accounts.values(), key=lambda a: a.account_id)
    payers = payer_statements(accounts, through, res.payer_cash(), only=payer_id)
    if payer_id is not None:
        involved = {
            a.account_id for a in accounts for m in a.months.values()
            if (m.bills and bill_payer(a, m) == payer_id) or any(p.payer_id == payer_id for p in m.payments)
        }
        accounts = [a for a in accounts if a.account_id in involved]
    members = [member_statement(a, through) for a in accounts]
    names = {a.account_id for a in accounts}
    seen = sorted(
        (d for d in res.discrepancies.values()
         if d.account_id in names
         and (payer_id is None or d.payer_id == payer_id)
         and (through is None or d.coverage_month is None or d.coverage_month <= through)),
        key=lambda d: (d.account_id, d.coverage_month or date.min, d.kind, d.discrepancy_id),
    )
    open_rows = [d for d in seen if d.status == "open"]
    from replay.aging import aging as age

    ages = age(accounts, plan, as_of_day, issued_on=issued_on, payer_id=payer_id, through=through)
    return Report(
        known_at=known_at, known_at_input=known_at_input, through=through, through_input=through_input,
        timezone=plan.timezone, events_replayed=res.events_replayed, last_recorded_at=res.last_recorded_at,
        members=members, payers=payers, open_discrepancies=open_rows,
        aging_buckets=ages.buckets, aging=ages.charges, discrepancies=seen, aging_detail=ages,
    )
