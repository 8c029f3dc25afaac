"""Documents people read: member and agency statements, the books overview, worksheets, notices.

Each document is a Jinja2 template (``replay/templates``, autoescaped) rendered from a context that
this module builds from the books as known at R; the command line writes them as HTML or as PDF
(WeasyPrint, offline), and the web app can render the same templates with the same contexts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup

from events.money import format_cents
from processor.state import PAYMENT_APPLIED, AccountState
from projections.model import DiscrepancyRow
from replay import charts
from replay.aging import aging
from replay.books import Books, ChainInfo
from replay.statements import Statement, bill_payer, member_statement, payer_statements

ISSUER = "benefits-ledger: premium and benefit accounts"
ACTORS = {"agency_coordinator": "agency benefits coordinator", "payroll": "agency payroll",
          "member": "member", "billing": "billing", "accounts_staff": "accounts staff"}


class DocumentError(ValueError):
    """The document cannot be made (an account or payer not in the books); the message says which."""


@cache
def environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("replay", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["money"] = lambda c: format_cents(int(c))
    env.filters["month"] = lambda d: f"{d:%Y-%m}" if d else "-"
    env.filters["actor"] = lambda a: ACTORS.get(a, a)
    env.filters["day"] = lambda d: d.isoformat() if d else ""
    return env


def render(template: str, **context: Any) -> str:
    return str(environment().get_template(template).render(**context))


def _offline(url: str, *args: Any, **kwargs: Any) -> Any:
    """WeasyPrint may read nothing from outside the document (no network, no files)."""
    if url.startswith("data:"):
        from weasyprint.urls import default_url_fetcher

        return default_url_fetcher(url, *args, **kwargs)
    raise ValueError(f"documents are self-contained; refusing to fetch {url}")


def html_to_pdf(html: str) -> bytes:
    """The HTML as PDF, rendered offline by WeasyPrint with the print CSS."""
    from weasyprint import HTML

    pdf: bytes = HTML(string=html, url_fetcher=_offline).write_pdf()
    return pdf


@dataclass(frozen=True, slots=True)
class Footer:
    known_at: str
    timezone: str
    through: str | None
    events_replayed: int
    last_recorded_at: str | None
    chain: ChainInfo | None
    verified_at: str | None = None
    generator: str = "benefits-ledger replay: every figure is the archive folded again by the ledger's own rules"


def footer(books: Books, through: date | None = None) -> Footer:
    zone = ZoneInfo(books.plan.timezone)
    last = books.result.last_recorded_at
    return Footer(
        known_at=books.known_at.astimezone(zone).isoformat(), timezone=books.plan.timezone,
        through=through.isoformat() if through else None, events_replayed=books.result.events_replayed,
        last_recorded_at=last.astimezone(zone).isoformat(timespec="seconds") if last else None, chain=books.chain,
        verified_at=books.chain.verified_at.astimezone(zone).isoformat(timespec="seconds")
        if books.chain is not None and books.chain.verified_at is not None else None,
    )


@dataclass(slots=True)
class ShownDiscrepancy:
    discrepancy_id: str
    kind: str
    status: str
    account_id: str
    coverage_month: date | None
    expected_cents: int
    actual_cents: int
    explanation: str
    action: str
    actor: str
    resolution: str = ""
    opened: str = ""


def shown(books: Books, d: DiscrepancyRow) -> ShownDiscrepancy:
    zone = ZoneInfo(books.plan.timezone)
    resolution = ""
    if d.status != "open":
        how = {"resolved": "resolved by", "superseded": "superseded by"}.get(d.status, f"{d.status} by")
        resolution = f"{how} {books.describe_event(d.resolved_by)}"
    return ShownDiscrepancy(
        discrepancy_id=d.discrepancy_id, kind=d.kind, status=d.status, account_id=d.account_id,
        coverage_month=d.coverage_month, expected_cents=d.expected_cents, actual_cents=d.actual_cents,
        explanation=d.explanation, action=d.action, actor=d.actor, resolution=resolution,
        opened=d.opened_recorded_at.astimezone(zone).date().isoformat() if d.opened_recorded_at else "",
    )


def _svg(svg: str | None) -> Markup | None:
    # vl-convert writes the SVG from our data and escapes its text; it is inserted as markup
    return Markup(svg) if svg else None


def _in_range(month: date | None, through: date | None) -> bool:
    return month is not None and (through is None or month <= through)


# -- the member statement --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Activity:
    """One line of money on a member's statement, with its effect on the balance."""

    coverage_month: date
    what: str  # bill | adjustment | payment | payment held | refund issued | refund returned ...
    ref: str
    detail: str
    amount_cents: int
    effect_cents: int  # + owed more, - owed less; held cash changes nothing until it is applied


@dataclass(slots=True)
class MonthDetail:
    coverage_month: date
    due_on: date | None
    expected_cents: int | None
    employee_cents: int | None
    employer_cents: int | None
    pre_tax_cents: int | None
    post_tax_cents: int | None
    imputed_cents: int | None
    billed_cents: int
    adjustments_cents: int
    paid_cents: int
    refunds_cents: int
    balance_cents: int
    unapplied_cents: int


def member_activity(books: Books, account: AccountState, through: date | None) -> list[Activity]:
    out: list[Activity] = []
    for m in sorted((m for m in account.months.values() if _in_range(m.month, through)),
                    key=lambda m: m.month or date.min):
        assert m.month is not None
        for b in m.bills:
            to = f", to {b.agency_id}" if b.agency_id else ", direct"
            out.append(Activity(m.month, "bill", b.bill_id, f"{b.plan}/{b.tier}, due {b.due_on}{to}", b.amount_cents,
                                b.amount_cents))
        for a in m.adjustments:
            out.append(Activity(m.month, "adjustment", a.adjustment_id, a.plan or "", a.amount_cents, a.amount_cents))
        for p in m.payments:
            label = {PAYMENT_APPLIED: "payment"}.get(p.status, f"payment ({p.status.replace('_', ' ')})")
            detail = f"from {p.payer_id} by {p.method}" + (f", trace {p.trace_number}" if p.trace_number else "")
            if p.moved_to:
                detail += f"; applied to {p.moved_to}"
            if p.refund_id:
                detail += f"; returned by refund {p.refund_id}"
            out.append(Activity(m.month, label, p.payment_id, detail, p.amount_cents,
                                -p.amount_cents if p.status == PAYMENT_APPLIED else 0))
        for r in m.refunds:
            info = books.refunds.get(r.refund_id)
            out.append(Activity(m.month, "refund issued", r.refund_id, f"to {r.payee_id}"
                                + (f" by {info.method}, {info.issued_on}: {info.reason}" if info else ""),
                                r.amount_cents, r.amount_cents))
            if r.returned_by is not None:
                why = f": {info.returned_reason}" if info and info.returned_reason else ""
                out.append(Activity(m.month, "refund returned", r.refund_id,
                                    f"{books.describe_event(r.returned_by)}{why}", r.amount_cents, -r.amount_cents))
    return out


def month_details(account: AccountState, through: date | None) -> list[MonthDetail]:
    rows = []
    for m in sorted((m for m in account.months.values() if _in_range(m.month, through)),
                    key=lambda m: m.month or date.min):
        assert m.month is not None
        employee = m.employee_share_cents
        post = m.post_tax_cents
        rows.append(MonthDetail(
            coverage_month=m.month, due_on=m.due_on, expected_cents=m.expected_cents, employee_cents=employee,
            employer_cents=m.employer_share_cents,
            pre_tax_cents=None if employee is None or post is None else employee - post, post_tax_cents=post,
            imputed_cents=m.imputed_income_cents, billed_cents=m.billed_cents, adjustments_cents=m.adjusted_cents,
            paid_cents=m.paid_cents, refunds_cents=m.refunded_cents, balance_cents=m.balance_cents,
            unapplied_cents=m.unapplied_cents,
        ))
    return rows


def _discrepancies(books: Books, keep: Any, through: date | None) -> list[ShownDiscrepancy]:
    rows = [d for d in books.result.discrepancies.values()
            if keep(d) and (through is None or d.coverage_month is None or d.coverage_month <= through)]
    rows.sort(key=lambda d: (d.account_id, d.coverage_month or date.min, d.kind, d.discrepancy_id))
    return [shown(books, d) for d in rows]


def member_context(books: Books, account_id: str, through: date | None = None) -> dict[str, Any]:
    account = books.accounts.get(account_id)
    if account is None:
        raise DocumentError(f"account {account_id} is not in the books as known at {books.known_at.isoformat()}")
    st = member_statement(account, through)
    months = month_details(account, through)
    activity = member_activity(books, account, through)
    assert sum(a.effect_cents for a in activity) == st.balance_cents, "activity lines must add up to the balance"
    ages = aging([account], books.plan, books.as_of_day, issued_on=books.issued_on, through=through)
    found = _discrepancies(books, lambda d: d.account_id == account_id, through)
    open_rows = [d for d in found if d.status == "open"]
    refunds = [a for a in activity if a.what == "refund issued"]
    returned = [a for a in activity if a.what == "refund returned"]
    billed = {m.coverage_month: m.billed_cents + m.adjustments_cents for m in months}
    paid = {m.coverage_month: m.paid_cents for m in months}
    agencies = sorted({s.agency_id for s in account.coverages})
    direct = all(bill_payer(account, m) == account_id for m in account.months.values() if m.bills)
    return {
        "title": f"Statement of account {account_id}",
        "subtitle": ("direct pay" if direct else f"paid through {', '.join(agencies)}")
        + f"; as known at {books.known_at.astimezone(ZoneInfo(books.plan.timezone)):%Y-%m-%d %H:%M}",
        "issuer": ISSUER, "account_id": account_id, "statement": st, "months": months, "activity": activity,
        "coverage": sorted(account.coverages, key=lambda s: (s.coverage_line, s.begin, s.member_id)),
        "aging": ages, "open": open_rows, "closed": [d for d in found if d.status != "open"],
        "actors": Counter(d.actor for d in open_rows),
        "refunds_issued_cents": sum(a.amount_cents for a in refunds),
        "refunds_returned_cents": sum(a.amount_cents for a in returned),
        "notices": [(n, at) for n, at in books.notices if n.account_id == account_id],
        "tax": {
            "employee_cents": sum(m.employee_cents or 0 for m in months),
            "employer_cents": sum(m.employer_cents or 0 for m in months),
            "pre_tax_cents": sum(m.pre_tax_cents or 0 for m in months),
            "post_tax_cents": sum(m.post_tax_cents or 0 for m in months),
            "imputed_cents": sum(m.imputed_cents or 0 for m in months),
        },
        "charts": {
            "billed_paid": _svg(charts.monthly_series("Billed and paid by coverage month",
                                                      {"billed": billed, "paid": paid}, chart_id="billed-paid")),
            "balance": _svg(charts.balance_line("Balance over time",
                                                {m.coverage_month: m.balance_cents for m in months})),
        },
        "footer": footer(books, through),
    }


# -- the agency statement ------------------------------------------------------------------------------


@dataclass(slots=True)
class MemberSection:
    account_id: str
    statement: Statement
    open_kinds: list[str] = field(default_factory=list)


def agency_context(books: Books, payer_id: str, through: date | None = None) -> dict[str, Any]:
    accounts = sorted(books.accounts.values(), key=lambda a: a.account_id)
    (st,) = payer_statements(accounts, through, books.result.payer_cash(), only=payer_id)
    if not st.lines and not st.unapplied_cents:
        raise DocumentError(f"payer {payer_id} has nothing in the books as known at {books.known_at.isoformat()}")
    involved = [a for a in accounts if any(
        _in_range(m.month, through) and ((m.bills and bill_payer(a, m) == payer_id)
                                         or any(p.payer_id == payer_id for p in m.payments))
        for m in a.months.values())]
    ages = aging(involved, books.plan, books.as_of_day, issued_on=books.issued_on, payer_id=payer_id,
                 through=through)
    found = _discrepancies(books, lambda d: d.payer_id == payer_id or d.account_id == f"payer:{payer_id}", through)
    open_rows = [d for d in found if d.status == "open"]
    open_by_account = Counter(d.account_id for d in open_rows)
    sections, settled = [], 0
    for a in involved:
        ms = member_statement(a, through)
        if (all(x.balance_cents == 0 for x in ms.lines) and not ms.unapplied_cents
                and not open_by_account.get(a.account_id)):
            settled += 1  # nothing owed either way, nothing open: counted, not listed
            continue
        sections.append(MemberSection(a.account_id, ms, sorted(d.kind for d in open_rows
                                                               if d.account_id == a.account_id)))
    months = {x.coverage_month: x for x in st.lines}
    kinds = Counter(d.kind for d in open_rows)
    actors = Counter(ACTORS.get(d.actor, d.actor) for d in open_rows)
    return {
        "title": f"Agency statement: {payer_id}",
        "subtitle": f"as known at {books.known_at.astimezone(ZoneInfo(books.plan.timezone)):%Y-%m-%d %H:%M}"
        + (f", coverage months through {through:%Y-%m}" if through else ""),
        "issuer": ISSUER, "payer_id": payer_id, "statement": st, "aging": ages, "sections": sections,
        "settled_members": settled, "members": len(involved), "open": open_rows,
        "closed": [d for d in found if d.status != "open"], "kinds": kinds, "actors": actors,
        "other_payers_cents": st.balance_cents - ages.balance_cents,
        "charts": {
            "billed_paid": _svg(charts.monthly_series(
                f"{payer_id}: billed and paid by coverage month",
                {"billed": {m: x.billed_cents + x.adjustments_cents for m, x in months.items()},
                 "paid": {m: x.paid_cents for m, x in months.items()}}, chart_id="billed-paid")),
            "balance": _svg(charts.balance_line(f"{payer_id}: balance over time",
                                                {m: x.balance_cents for m, x in months.items()})),
            "kinds": _svg(charts.category_bars("Open discrepancies by kind", dict(kinds.most_common()),
                                               x_title="open discrepancies", chart_id="open-by-kind")),
            "actors": _svg(charts.category_bars("Open discrepancies by who acts", dict(actors.most_common()),
                                                x_title="open discrepancies", chart_id="open-by-actor")),
            "aging": _svg(charts.stacked_aging(f"{payer_id}: aging of what is owed", {payer_id: ages.totals()},
                                               ages.buckets)),
        },
        "footer": footer(books, through),
    }


def books_context(books: Books, through: date | None = None) -> dict[str, Any]:
    """Every paying agency on one page: balances, aging by agency, open discrepancies by kind and actor."""
    accounts = sorted(books.accounts.values(), key=lambda a: a.account_id)
    payers = [s for s in payer_statements(accounts, through, books.result.payer_cash())]
    ages = aging(accounts, books.plan, books.as_of_day, issued_on=books.issued_on, through=through)
    by_payer = ages.by_payer()
    agencies = {p: row for p, row in by_payer.items() if p in {s.id for s in payers}}
    direct = {p: row for p, row in by_payer.items() if p not in agencies}
    found = _discrepancies(books, lambda d: True, through)
    open_rows = [d for d in found if d.status == "open"]
    kinds = Counter(d.kind for d in open_rows)
    actors = Counter(ACTORS.get(d.actor, d.actor) for d in open_rows)
    direct_row = {b: sum(r.get(b, 0) for r in direct.values()) for b in [*ages.buckets, "credits", "balance"]}
    return {
        "title": "The books: every paying agency",
        "subtitle": f"as known at {books.known_at.astimezone(ZoneInfo(books.plan.timezone)):%Y-%m-%d %H:%M}"
        + (f", coverage months through {through:%Y-%m}" if through else ""),
        "issuer": ISSUER, "payers": payers, "aging": ages, "agencies": agencies, "direct": direct_row,
        "direct_members": len(direct), "open": open_rows, "kinds": kinds, "actors": actors,
        "charts": {
            "aging": _svg(charts.stacked_aging("Aging by agency", agencies, ages.buckets)),
            "kinds": _svg(charts.category_bars("Open discrepancies by kind", dict(kinds.most_common()),
                                               x_title="open discrepancies", chart_id="open-by-kind")),
            "actors": _svg(charts.category_bars("Open discrepancies by who acts", dict(actors.most_common()),
                                                x_title="open discrepancies", chart_id="open-by-actor")),
        },
        "footer": footer(books, through),
    }


def worksheet_context(books: Books, ws: Any) -> dict[str, Any]:
    zone = ZoneInfo(books.plan.timezone)
    return {
        "title": f"Reconciliation worksheet: {ws.payer_id}, {ws.month:%B %Y}",
        "subtitle": f"coverage month {ws.month:%Y-%m}, as known at {books.known_at.astimezone(zone):%Y-%m-%d %H:%M}",
        "issuer": ISSUER, "ws": ws, "footer": footer(books, None),
    }


def render_document(kind: str, books: Books, *, payer_id: str | None = None, account_id: str | None = None,
                    through: date | None = None) -> str:
    """``member``, ``agency`` or ``books`` as one self-contained HTML page."""
    if kind == "member":
        assert account_id is not None
        return render("member.html", **member_context(books, account_id, through))
    if kind == "agency":
        assert payer_id is not None
        return render("agency.html", **agency_context(books, payer_id, through))
    return render("books.html", **books_context(books, through))
