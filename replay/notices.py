"""Notices to agency coordinators and members: each action they must take, the amount, the due date
and the rule behind it in plain words, made from the books as known at R.

A notice is reproducible: its id, its issue date and every figure follow from (R, the recipient, the
discrepancies it covers), and its document names the archive's chain head as of R, not the time it
was rendered. Issuing it publishes ``notice_issued`` with R and the SHA-256 of the HTML; replaying
the archive to R and rendering the same discrepancies gives the same bytes (``reproduce``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from events.money import format_cents
from events.types import NoticeIssued
from processor.rules.remittances import remittance_account
from processor.settings import PlanSettings
from projections.model import DiscrepancyRow
from replay.books import Books

TEMPLATE_VERSION = 1
# Who a coordinator's notice is for: the agency's benefits coordinator and its payroll office.
COORDINATOR_ACTORS = frozenset({"agency_coordinator", "payroll"})
MEMBER_ACTORS = frozenset({"member"})


class NoticeError(ValueError):
    """A notice cannot be made or reproduced; the message says why."""


@dataclass(frozen=True, slots=True)
class NoticeAction:
    discrepancy_id: str
    kind: str
    account_id: str
    coverage_month: date | None
    title: str
    amount_cents: int  # what is to be paid, collected, corrected or refunded
    amount_label: str
    due_on: date | None
    due_label: str
    action: str
    rule: str  # the rule behind it, in plain words
    explanation: str


@dataclass(slots=True)
class Notice:
    notice_id: str
    recipient: str  # agency_coordinator | member
    recipient_id: str
    account_id: str  # where notice_issued goes: payer:<agency> or the member's account
    known_at: datetime
    issued_on: date
    actions: list[NoticeAction] = field(default_factory=list)
    html: str = ""

    @property
    def discrepancy_ids(self) -> tuple[str, ...]:
        return tuple(a.discrepancy_id for a in self.actions)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.html.encode()).hexdigest()

    @property
    def total_due_cents(self) -> int:
        return sum(a.amount_cents for a in self.actions if a.amount_label == "amount due")

    def event(self, *, occurred_at: datetime, channel: str = "mail", source: str = "benefits-ledger-notices"
              ) -> NoticeIssued:
        return NoticeIssued(
            event_id=f"notice:{self.notice_id}", account_id=self.account_id, effective_on=self.issued_on,
            occurred_at=occurred_at, source=source, notice_id=self.notice_id, recipient=self.recipient,  # type: ignore[arg-type]
            recipient_id=self.recipient_id, discrepancy_ids=self.discrepancy_ids, known_at=self.known_at,
            document_sha256=self.sha256, channel=channel, template_version=TEMPLATE_VERSION,  # type: ignore[arg-type]
        )

    def to_json(self) -> dict[str, Any]:
        return {"notice_id": self.notice_id, "recipient": self.recipient, "recipient_id": self.recipient_id,
                "account_id": self.account_id, "known_at": self.known_at.isoformat(),
                "issued_on": self.issued_on.isoformat(), "discrepancy_ids": list(self.discrepancy_ids),
                "total_due_cents": self.total_due_cents, "document_sha256": self.sha256}


def notice_id(recipient: str, recipient_id: str, known_at: datetime, ids: tuple[str, ...]) -> str:
    text = "|".join((recipient, recipient_id, known_at.astimezone(UTC).isoformat(), *sorted(ids)))
    return "N-" + hashlib.sha256(text.encode()).hexdigest()[:22]


def _month_due(books: Books, d: DiscrepancyRow) -> date | None:
    account = books.accounts.get(d.account_id)
    if account is None or d.coverage_month is None:
        return None
    m = account.months.get(d.coverage_month.isoformat())
    return m.due_on if m is not None else None


def describe(books: Books, d: DiscrepancyRow, issued_on: date) -> NoticeAction:
    """One action: what it is, how much, by when, and the rule, in plain words."""
    plan: PlanSettings = books.plan
    gap = d.actual_cents - d.expected_cents
    month = f"{d.coverage_month:%B %Y}" if d.coverage_month else ""
    due = _month_due(books, d)
    tolerance = format_cents(plan.tolerance_cents)
    common: dict[str, Any] = dict(discrepancy_id=d.discrepancy_id, kind=d.kind, account_id=d.account_id,
                                  coverage_month=d.coverage_month, action=d.action, explanation=d.explanation)
    if d.kind == "cobra_shortfall":
        pay_by = issued_on + timedelta(days=plan.cobra_shortfall_notice_days)
        return NoticeAction(
            **common, title=f"COBRA premium for {month} paid {format_cents(-gap)} short", amount_cents=-gap,
            amount_label="amount due", due_on=pay_by,
            due_label=f"pay by {pay_by:%B %d, %Y} ({plan.cobra_shortfall_notice_days} days after this notice)",
            rule="Under 26 CFR 54.4980B-8 (Q&A-5(d)), a COBRA payment that falls short of the amount due by no more"
            f" than the lesser of {format_cents(plan.cobra_shortfall_max_cents)} or"
            f" {plan.cobra_shortfall_max_percent}% of the amount due counts as full payment unless the plan"
            " tells you the amount of the shortfall and gives you a reasonable time to pay it. This notice is"
            f" that notice: your coverage continues if you pay the {format_cents(-gap)} by {pay_by:%B %d, %Y}.",
        )
    if d.kind == "underpaid":
        return NoticeAction(
            **common, title=f"{d.account_id}: premium for {month} paid {format_cents(-gap)} short",
            amount_cents=-gap, amount_label="amount due", due_on=due,
            due_label=f"was due {due:%B %d, %Y}" if due else "due now",
            rule=f"Each coverage month's premium is owed in full; a payment may differ from what is owed by at"
            f" most {tolerance}. A shortfall usually means a change of tier or plan that payroll did not follow:"
            " correct the deduction and pay the difference.",
        )
    if d.kind == "missing_payment":
        deadline = due + timedelta(days=plan.grace_days) if due else None
        return NoticeAction(
            **common, title=f"{d.account_id}: no premium paid for {month}", amount_cents=d.expected_cents,
            amount_label="amount due", due_on=due,
            due_label=(f"was due {due:%B %d, %Y}; the {plan.grace_days}-day grace period ended {deadline:%B %d, %Y}"
                       if due and deadline else "overdue"),
            rule=f"A premium is delinquent when nothing has been paid {plan.grace_days} days after its due date."
            + (" For COBRA continuation coverage a premium not paid within the grace period ends the coverage"
               " for non-payment (42 U.S.C. 300bb-2)." if "COBRA" in d.explanation else ""),
        )
    if d.kind == "overpaid":
        return NoticeAction(
            **common, title=f"{d.account_id}: premium for {month} paid {format_cents(gap)} over", amount_cents=gap,
            amount_label="excess to credit or refund", due_on=None, due_label="no payment due",
            rule=f"A payment more than {tolerance} above what is owed is not kept as premium: the excess is"
            " credited or refunded. Check the payroll deduction so it is not taken again next month.",
        )
    if d.kind == "remittance_total_mismatch":
        return NoticeAction(
            **common, title="remittance total does not equal its lines", amount_cents=abs(gap),
            amount_label="difference to correct", due_on=None, due_label="correct with the next remittance",
            rule="A remittance's payment total must equal the sum of its member lines (X12 820: BPR02 equals the"
            " sum of RMR04). Send a corrected remittance so every dollar can be applied to a member.",
        )
    if d.kind == "tax_treatment":
        return NoticeAction(
            **common, title=f"{d.account_id}: {month} deduction taken before tax", amount_cents=d.actual_cents,
            amount_label="deduction to correct", due_on=None, due_label="correct in the next payroll",
            rule="Under IRC section 125, the premium share for a domestic partner who is not a tax dependent is"
            " deducted after tax, and the employer-paid value of that coverage is imputed income.",
        )
    return NoticeAction(
        **common, title=f"{d.kind.replace('_', ' ')}" + (f" for {month}" if month else ""),
        amount_cents=abs(gap), amount_label="difference", due_on=due, due_label=f"due {due}" if due else "",
        rule=d.explanation,
    )


def _notice(books: Books, recipient: str, recipient_id: str, rows: list[DiscrepancyRow]) -> Notice:
    from replay.documents import footer, render

    zone = ZoneInfo(books.plan.timezone)
    issued_on = books.known_at.astimezone(zone).date()
    rows = sorted(rows, key=lambda d: (d.kind, d.account_id, d.coverage_month or date.min, d.discrepancy_id))
    ids = tuple(d.discrepancy_id for d in rows)
    n = Notice(
        notice_id=notice_id(recipient, recipient_id, books.known_at, ids), recipient=recipient,
        recipient_id=recipient_id,
        account_id=remittance_account(recipient_id) if recipient == "agency_coordinator" else recipient_id,
        known_at=books.known_at, issued_on=issued_on, actions=[describe(books, d, issued_on) for d in rows],
    )
    n.html = render("notice.html", title=f"Notice {n.notice_id}: actions required", subtitle=None,
                    issuer="benefits-ledger: premium and benefit accounts", notice=n, plan=books.plan,
                    footer=footer(books, None), template_version=TEMPLATE_VERSION)
    return n


def coordinator_rows(books: Books, payer_id: str) -> list[DiscrepancyRow]:
    return [d for d in books.result.discrepancies.values()
            if d.status == "open" and d.actor in COORDINATOR_ACTORS
            and (d.payer_id == payer_id or d.account_id == remittance_account(payer_id))]


def member_rows(books: Books, account_id: str) -> list[DiscrepancyRow]:
    return [d for d in books.result.discrepancies.values()
            if d.status == "open" and d.actor in MEMBER_ACTORS and d.account_id == account_id]


def notices_for(books: Books, *, payer_id: str | None = None, account_id: str | None = None) -> list[Notice]:
    """The agency coordinator's notice (and notices to its members who must act themselves) for
    ``payer_id``, or the member's notice for ``account_id``; nobody without an action gets one."""
    out = []
    if payer_id is not None:
        rows = coordinator_rows(books, payer_id)
        if rows:
            out.append(_notice(books, "agency_coordinator", payer_id, rows))
        def of_agency(account_id: str) -> bool:
            account = books.accounts.get(account_id)
            return account is not None and any(s.agency_id == payer_id for s in account.coverages)

        members = sorted({d.account_id for d in books.result.discrepancies.values()
                          if d.status == "open" and d.actor in MEMBER_ACTORS
                          and (d.payer_id == payer_id or of_agency(d.account_id))})
        out.extend(_notice(books, "member", m, member_rows(books, m)) for m in members)
    if account_id is not None:
        rows = member_rows(books, account_id)
        if rows:
            out.append(_notice(books, "member", account_id, rows))
    return out


def reproduce(books: Books, event: NoticeIssued) -> Notice:
    """The notice ``event`` issued, made again from ``books`` (replayed to ``event.known_at``)."""
    if books.known_at != event.known_at:
        raise NoticeError(f"books are as known at {books.known_at.isoformat()}, the notice at"
                          f" {event.known_at.isoformat()}")
    if event.template_version != TEMPLATE_VERSION:
        raise NoticeError(f"notice {event.notice_id} was made with template version {event.template_version};"
                          f" this ledger renders version {TEMPLATE_VERSION}")
    rows = [books.result.discrepancies.get(i) for i in event.discrepancy_ids]
    missing = [i for i, d in zip(event.discrepancy_ids, rows, strict=True) if d is None]
    if missing:
        raise NoticeError(f"discrepancies {missing} of notice {event.notice_id} are not in the books as known at R")
    return _notice(books, event.recipient, event.recipient_id, [d for d in rows if d is not None])
