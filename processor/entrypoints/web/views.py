"""What the pages show, assembled from the store (live) or from a replay (as of any (E, R)).

Nothing here decides an amount: months, shares, rates and findings come from the fold state the
processor committed, or that replay folded with the same functions; this only arranges them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import msgspec

from events.money import format_cents
from processor.entrypoints.web.context import WebContext
from processor.rules.base import Rejected
from processor.rules.coverage import priced_segments
from processor.rules.dates import first_of_month, last_day
from processor.rules.workflow import agency_of, beyond_retroactive_limit, closing_adjustments, needs_approval
from processor.settings import PlanSettings
from processor.state import AccountState, CoverageSegment, MonthState, OpenDiscrepancy, PartitionState
from projections.model import DiscrepancyRow, HistoryEntry, QueuePage, QueueQuery, select_queue
from replay.fold import ReplayResult, replay

ENVELOPE = ("type", "event_id", "account_id", "effective_on", "occurred_at", "source", "causation_id",
            "schema_version")
TEXT_FIELDS = ("reason", "note", "explanation", "action")
CLOSED_BY_PEOPLE = ("waived", "written_off", "closed")


def money(cents: int | None) -> str:
    return "?" if cents is None else format_cents(cents)


def rule_of(kind: str, plan: PlanSettings) -> tuple[str, str]:
    """The rule a kind of discrepancy applies, and where it comes from (DOMAIN.md, the plan settings)."""
    tolerance = money(plan.tolerance_cents)
    rules = {
        "underpaid": (f"applied payments for a billed month fall short of billed + adjustments by more than {tolerance}"
                      "; payroll deductions each owe (12 / pay periods a year) of the monthly premium",
                      "plan settings tolerance_cents, payroll_allocation"),
        "overpaid": (f"applied payments for a billed month exceed billed + adjustments by more than {tolerance}",
                     "plan setting tolerance_cents"),
        "billed_not_enrolled": ("a bill for a month with no subscriber coverage in force",
                                "enrollment (834 INS/HD, DTP*348/349) against billing"),
        "enrolled_not_billed": ("coverage in force in a month whose billing cycle closed without a bill",
                                "billing_cycle_closed (the billing calendar)"),
        "wrong_rate": (f"a plan's bill differs from the rate for the plan and tier in force that month; COBRA at"
                       f" {plan.cobra_premium_percent}% of the plan cost ({plan.cobra_disability_percent}% in"
                       " disability-extension months 19 to 29)",
                       "the rate table (rate_published); 42 U.S.C. 300bb-2(3)"),
        "paid_after_termination": ("a payment for a month after the subscriber's coverage ended: held, refund due",
                                   "enrollment terminations"),
        "unmatched_payment": ("a payment for an unknown member, a month never billed, or no month: unapplied cash",
                              "remittance lines (820 RMR, DTM*582)"),
        "duplicate_payment": ("the same remittance line (trace, member, month) under another payment id",
                              "820 TRN02 trace number"),
        "missing_payment": (f"billed, nothing paid, and a business day later than the due date plus {plan.grace_days}"
                            f" days (COBRA: {plan.cobra_first_payment_days} days after election for the first"
                            f" payment, {plan.cobra_grace_days} days after the due date for later ones)",
                            "plan setting grace_days; 42 U.S.C. 300bb-2(3), 26 CFR 54.4980B-8 Q&A-5"),
        "remittance_total_mismatch": ("a remittance's payment total (BPR02) differs from the sum of its lines (RMR04)",
                                      "ASC X12 820 005010X218"),
        "retroactive_change": (f"an enrollment or rate change reached into a billed month and moved its premium;"
                               f" reaching back more than {plan.retroactive_limit_days} days it needs a"
                               " supervisor's approval", "plan setting retroactive_limit_days"),
        "tax_treatment": ("a pre-tax deduction for coverage of a domestic partner who is not a tax dependent: that"
                          " share is post-tax and its employer-paid value imputed income",
                          "IRC 125 (cafeteria plans); IRC 106 and 79 for imputed income"),
        "cobra_shortfall": ("a COBRA payment short by no more than the lesser of"
                            f" {money(plan.cobra_shortfall_max_cents)} and {plan.cobra_shortfall_max_percent}% is"
                            " full payment unless the member is told and given time to pay",
                            "26 CFR 54.4980B-8 Q&A-5(d)"),
        "refund_due": ("a credit on a month whose coverage has ended cannot pay a later premium: refund it",
                       "refund of premiums on cancelled coverage"),
        "unknown_coverage": ("a termination, change or reinstatement for coverage the ledger never heard of: kept,"
                             " and applied when the coverage's enrollment arrives", "ASC X12 834 005010X220A1"),
        "eligibility": ("the tier must match the covered dependents, and a child's coverage ends at the plan's age"
                        " limit (health: 26, through the end of the birthday month)",
                        "PHSA 2714 (42 U.S.C. 300gg-14); plan settings tiers and child_age_limits"),
        "refund_recovery": ("a refund was paid out of money that was later reversed: the part no credit covers is"
                            " owed back", "refund of premiums; payment reversal"),
    }
    return rules.get(kind, (kind, "processor/rules/"))


# ---------------------------------------------------------------------------------------------
# History


@dataclass(frozen=True, slots=True)
class HistoryView:
    entry: HistoryEntry
    data: dict[str, Any]
    actor: str
    details: list[tuple[str, str]]
    reasons: list[str]

    @property
    def discrepancy_id(self) -> str | None:
        value = self.data.get("discrepancy_id")
        return value if isinstance(value, str) else None


def history_view(entry: HistoryEntry) -> HistoryView:
    data: dict[str, Any] = msgspec.json.decode(entry.body)
    source = str(data.get("source", ""))
    actor = str(data.get("user") or (source.split(":", 1)[1] if source.startswith("web:") else source))
    if entry.emitted:
        actor = "ledger"
    reasons = [str(data[name]) for name in TEXT_FIELDS if data.get(name)]
    return HistoryView(entry=entry, data=data, actor=actor, details=event_details(data), reasons=reasons)


def event_details(data: dict[str, Any], *, envelope: bool = False) -> list[tuple[str, str]]:
    """An event's fields for people: money in dollars and cents, lists joined; the envelope and free
    text left out unless asked for."""
    details = []
    for name, value in data.items():
        if ((name in ENVELOPE or name in TEXT_FIELDS) and not envelope) or value is None or value in ([], ()):
            continue
        if name.endswith("_cents") and isinstance(value, int):
            details.append((name.removesuffix("_cents"), format_cents(value)))
        elif isinstance(value, list):
            details.append((name, ", ".join(str(v) for v in value)))
        else:
            details.append((name, str(value)))
    return details


def history(ctx: WebContext, account_id: str, known_at: datetime | None = None) -> list[HistoryView]:
    """The account's events in applied order (those recorded by ``known_at``), with what they caused."""
    with ctx.stores.lend() as store:
        entries = store.account_history(account_id)
    if known_at is not None:
        entries = [e for e in entries if e.recorded_at is not None and e.recorded_at <= known_at]
    return [history_view(e) for e in entries]


# ---------------------------------------------------------------------------------------------
# Accounts


@dataclass(slots=True)
class MonthView:
    month: MonthState
    rates: list[str]
    pre_tax_cents: int | None
    adjustments: list[tuple[str, int, str]]  # (adjustment id, cents, reason)
    open_kinds: list[str] = field(default_factory=list)


@dataclass(slots=True)
class AccountView:
    account: AccountState
    agency_id: str | None
    coverages: list[CoverageSegment]
    months: list[MonthView]
    held: list[Any]  # payments that named no month
    discrepancies: list[DiscrepancyRow]
    history: list[HistoryView]
    timeline: list[tuple[date, list[tuple[CoverageSegment, bool]]]]
    balance_cents: int
    known_at: datetime | None
    through: date | None


def account_view(ctx: WebContext, account: AccountState, part: PartitionState, rows: list[DiscrepancyRow],
                 entries: list[HistoryView], *, known_at: datetime | None, through: date | None) -> AccountView:
    plan = ctx.plan
    reasons = {e.entry.event_id: e.data.get("reason", "") for e in entries}
    months: list[MonthView] = []
    open_by_month: dict[date | None, list[str]] = {}
    for d in account.open.values():
        open_by_month.setdefault(d.coverage_month, []).append(d.kind)
    for m in sorted((m for m in account.months.values() if m.month is not None), key=lambda m: m.month or date.min):
        assert m.month is not None
        if through is not None and m.month > through:
            continue
        priced = priced_segments(account, m.month, plan)
        rates = []
        for seg in priced:
            rate = part.rate_for(seg.plan, seg.tier, m.month)
            rates.append(f"{seg.plan}/{seg.tier} " + (
                f"{money(rate.total_cents)} = {money(rate.employee_cents)} employee + {money(rate.employer_cents)}"
                f" employer (rate {rate.rate_id})" if rate else "no rate known")
                + (f"; COBRA at {plan.cobra_premium_percent}%" if seg.status == "cobra" else ""))
        pre_tax = None
        if m.employee_share_cents is not None and m.post_tax_cents is not None and priced and all(
                s.status == "active" for s in priced):
            pre_tax = m.employee_share_cents - m.post_tax_cents
        months.append(MonthView(
            month=m, rates=rates, pre_tax_cents=pre_tax,
            adjustments=[(a.adjustment_id, a.amount_cents, str(reasons.get(a.event_id, ""))) for a in m.adjustments],
            open_kinds=sorted(open_by_month.get(m.month, [])),
        ))
    held = [p for m in account.months.values() if m.month is None for p in m.payments]
    timeline = _timeline(account, [mv.month.month for mv in months if mv.month.month is not None], plan)
    return AccountView(
        account=account, agency_id=agency_of(account, None), coverages=list(account.coverages), months=months,
        held=held, discrepancies=rows, history=entries, timeline=timeline,
        balance_cents=sum(mv.month.balance_cents for mv in months), known_at=known_at, through=through,
    )


def _timeline(account: AccountState, months: list[date], plan: PlanSettings
              ) -> list[tuple[date, list[tuple[CoverageSegment, bool]]]]:
    """Month by month, each coverage segment and whether it is in force that month (coverage timeline)."""
    if not months and not account.coverages:
        return []
    first = min([*months, *(first_of_month(s.begin) for s in account.coverages)])
    last = max([*months, *(first_of_month(s.end or s.begin) for s in account.coverages)])
    out: list[tuple[date, list[tuple[CoverageSegment, bool]]]] = []
    m = first
    while m <= last and len(out) < 120:
        end = last_day(m)
        out.append((m, [(s, s.overlaps_month(m, end)) for s in account.coverages]))
        m = end + timedelta(days=1)
    return out


def replay_account(ctx: WebContext, account_id: str, known_at: datetime) -> ReplayResult:
    return replay(ctx.read_archive(known_at, account_id), ctx.plan)


def replay_all(ctx: WebContext, known_at: datetime) -> ReplayResult:
    return ctx.replays.get(known_at, lambda: replay(ctx.read_archive(known_at, None), ctx.plan))


def replayed_rows(res: ReplayResult) -> list[DiscrepancyRow]:
    """Replayed discrepancy rows with their agency (from the replayed accounts)."""
    out: list[DiscrepancyRow] = []
    for d in res.discrepancies.values():
        account = res.accounts.get(d.account_id)
        out.append(replace(d, agency_id=agency_of(account, d.payer_id) if account is not None else d.payer_id))
    return out


def queue_as_of(ctx: WebContext, query: QueueQuery, known_at: datetime) -> QueuePage:
    return select_queue(replayed_rows(replay_all(ctx, known_at)), query)


# ---------------------------------------------------------------------------------------------
# One discrepancy


@dataclass(slots=True)
class Proposal:
    """What a waiver, write-off or retroactive approval would post, from the committed state."""

    lines: list[tuple[str | None, int]]
    total_cents: int
    needs_approval: bool
    error: str | None = None


def open_discrepancy(account: AccountState | None, discrepancy_id: str) -> OpenDiscrepancy | None:
    if account is None:
        return None
    return next((d for d in account.open.values() if d.discrepancy_id == discrepancy_id), None)


def proposal(ctx: WebContext, account: AccountState | None, part: PartitionState | None,
             d: OpenDiscrepancy | None) -> Proposal | None:
    if account is None or part is None or d is None:
        return None
    try:
        lines = closing_adjustments(account, part, ctx.plan, d)
    except Rejected as exc:
        return Proposal(lines=[], total_cents=0, needs_approval=False, error=exc.reason)
    total = sum(amount for _, amount in lines)
    return Proposal(lines=lines, total_cents=total, needs_approval=needs_approval(total, ctx.plan))


def retro_needs_approval(account: AccountState | None, d: OpenDiscrepancy | None) -> bool:
    return account is not None and d is not None and d.kind == "retroactive_change" and beyond_retroactive_limit(
        account, d)
