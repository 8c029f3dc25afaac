"""Statements and the books overview as documents: templates (autoescaped), summary first, charts from
vl-convert, print CSS and PDF; refunds and returned refunds as lines; resolved items with how."""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime

from events.types import InputEvent, RefundIssued, RefundReturned
from processor.settings import PlanSettings
from replay.books import ChainInfo, books_from
from replay.documents import html_to_pdf, render_document
from tests.unit.builders import AGENCY, JAN, Ledger, bill, enroll, pay, rate
from tests.unit.test_worksheet import archived

FEB, MAR, APR = date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1)
RATE = 78_412
R = datetime(2026, 5, 1, tzinfo=UTC)


def history() -> list[InputEvent]:
    """M1 of AG-001: January paid, February nothing (a gap on the chart), March overpaid by $50 and then the
    coverage ends: the $50 is refunded and the refund check comes back. M2 is billed and paid in full."""
    refund = RefundIssued(event_id="rf-mar", account_id="M1", effective_on=APR, occurred_at=R, refund_id="RF-1",
                          payee_id=AGENCY, amount_cents=5_000, method="check",
                          reason="<b>credit</b> on a closed account", coverage_month=MAR)
    back = RefundReturned(event_id="rf-mar-back", account_id="M1", effective_on=APR, occurred_at=R,
                          refund_id="RF-1", reason="check returned: address unknown")
    return [rate(RATE, event_id="rate"), enroll(event_id="enr-1", account="M1", end=date(2026, 3, 31)),
            enroll(event_id="enr-2", account="M2"),
            bill(RATE, month=JAN, account="M1", event_id="b1"), pay(RATE, month=JAN, account="M1", event_id="p1"),
            bill(RATE, month=MAR, account="M1", event_id="b3"),
            pay(RATE + 5_000, month=MAR, account="M1", event_id="p3"),
            bill(RATE, month=JAN, account="M2", event_id="b2"), pay(RATE, month=JAN, account="M2", event_id="p2"),
            refund, back]


def books(chain: bool = True):  # type: ignore[no-untyped-def]
    b = books_from(archived(history()), PlanSettings(), known_at=R)
    if chain:
        b.chain = ChainInfo(heads={0: "ab" * 32}, verified_at=datetime(2026, 5, 2, 8, tzinfo=UTC),
                            events_checked=11, intact=True)
    return b


def test_the_member_statement_has_the_summary_first_coverage_and_every_refund_line() -> None:
    page = render_document("member", books(), account_id="M1")
    assert page.index('id="summary"') < page.index('id="coverage"') < page.index('id="months"') < page.index(
        'id="activity"')
    assert "UMP-CLASSIC" in page and ">EMP<" in page and "2026-03-31" in page  # plan, tier, coverage end
    for column in ("employee", "employer", "pre-tax", "post-tax", "imputed income"):
        assert f">{column}<" in page
    # the refund and its return are two lines, not a net $0.00
    assert page.count('class="refund-issued"') == 1 and page.count('class="refund-returned"') == 1
    assert "check returned: address unknown" in page
    assert "&lt;b&gt;credit&lt;/b&gt;" in page and "<b>credit</b>" not in page  # autoescaped
    assert 'data-total="balance">-$50.00<' in page  # the returned refund is a credit on March again
    # resolved items say how: the overpaid became a refund due, which the refund resolved, then reopened
    resolved = page[page.index('id="resolved"'):]
    assert "refund_due" in resolved and "resolved: resolved by refund_issued rf-mar (recorded 2026-03-10)" in resolved
    assert page.index('id="open-actions"') < page.index('id="resolved"')
    assert "refund_due" in page[page.index('id="open-actions"'):page.index('id="resolved"')]
    assert ChainInfo(heads={0: "ab" * 32}).digest in page
    assert "Verified intact (verify-archive) at 2026-05-02T08:00:00+00:00" in page
    assert not re.search(r"<(script|link|img)\b[^>]*(src|href)=", page)  # nothing to fetch


def test_the_agency_statement_names_the_agency_ties_aging_to_the_balance_and_leaves_settled_members_out() -> None:
    page = render_document("agency", books(), payer_id=AGENCY)
    assert "<title>Agency statement: AG-001</title>" in page
    assert page.index('id="summary"') < page.index('id="contents"') < page.index('id="charts"') < page.index(
        'id="members"')
    tie = re.sub(r"<[^>]+>", "", page[page.index('id="aging-tie"'):page.index("</p>", page.index('id="aging-tie"'))])
    assert "Aged outstanding $0.00 + credits -$50.00 = balance -$50.00" in tie
    assert "2 members billed to or paid by AG-001: 1 with something owed" in page
    assert "1 with nothing owed either way and nothing open are left out" in page
    assert 'id="member-M1"' in page and 'id="member-M2"' not in page
    # charts: billed vs paid shows February (nothing that month) between January and March
    chart = page[page.index('id="chart-billed-paid"'):page.index('id="chart-balance"')]
    assert "<svg" in chart and chart.index("2026-01") < chart.index("2026-02") < chart.index("2026-03")
    assert "coverage month" in chart and "$784.12" in chart  # an axis title and a value label
    # nothing outstanding: the aging chart is not drawn, the page says so
    assert "Nothing is outstanding: no aging to draw." in page


def test_the_books_overview_draws_aging_by_agency_only_when_something_is_owed() -> None:
    led = books(chain=False)
    page = render_document("books", led)
    assert "Nothing is outstanding: no aging to draw." in page and "folded in memory" in page
    owed = books_from(archived([*history(), bill(RATE, month=APR, account="M2", event_id="b-apr")]),
                      PlanSettings(), known_at=R)
    page = render_document("books", owed)
    aging = page[page.index('id="chart-aging"'):page.index('id="chart-kinds"')]
    assert "<svg" in aging and "AG-001" in aging and "$784.12" in aging


def test_a_statement_pdf_renders_and_carries_its_totals() -> None:
    from pypdf import PdfReader

    pdf = html_to_pdf(render_document("agency", books(), payer_id=AGENCY))
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 2
    text = " ".join(" ".join(p.extract_text() for p in reader.pages).split())
    assert "Agency statement: AG-001" in text and "-$50.00" in text and "$235,236" not in text
    assert "page 1 of" in text  # the print CSS's page footer


def test_statement_lines_add_up_to_the_balance_the_fold_keeps() -> None:
    led = Ledger()
    led.apply(*history())
    assert led.account("M1").months[MAR.isoformat()].balance_cents == -5_000
    assert books().accounts["M1"].months[MAR.isoformat()].balance_cents == -5_000
