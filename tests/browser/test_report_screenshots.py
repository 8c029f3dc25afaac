"""The documents people read, in a real headless Chromium (Debian's, driven by Playwright): a worksheet,
a coordinator's notice, a member's statement and an agency's statement, from the demo program folded in
memory. Each page renders with its figures visible, its charts drawn, and no request for anything
outside the page. ``UPDATE_SCREENSHOTS=1`` also writes the screenshots to docs/screenshots/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from processor.settings import PlanSettings
from replay.books import Books, ChainInfo, books_from
from replay.documents import render, render_document, worksheet_context
from replay.notices import notices_for
from replay.worksheet import worksheet
from tests.unit.test_worksheet import demo_archive

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@cache
def books() -> Books:
    from datetime import UTC, datetime

    # the demo folded in memory records every event at one instant; the books are read as known well after
    # its last business day, as a specialist would read them
    b = books_from(demo_archive(300, 12, 4), PlanSettings(), known_at=datetime(2027, 2, 16, 9, tzinfo=UTC))
    b.chain = ChainInfo(heads={p: f"{p:02x}" * 32 for p in range(4)},
                        verified_at=datetime(2027, 2, 16, 9, 5, tzinfo=UTC),
                        events_checked=b.result.events_replayed, intact=True)
    return b


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("no chromium: apt-get install chromium (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                              args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def show(browser: Any, html: str, tmp_path: Path, name: str) -> tuple[Any, Any, list[str]]:
    """Open the page from a file; return it, its context, and every request it made besides itself."""
    page_file = tmp_path / f"{name}.html"
    page_file.write_text(html, encoding="utf-8")
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if r.url != page_file.as_uri() else None)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_file.as_uri())
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 20_000  # a real page, not a blank one
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)
    assert errors == []
    return page, context, requests


def visible_text(page: Any, selector: str) -> str:
    loc = page.locator(selector)
    assert loc.is_visible(), selector
    return " ".join(loc.inner_text().split())


def test_worksheet_renders_with_its_remainder_and_exceptions(browser: Any, tmp_path: Path) -> None:
    b = books()
    ws = max((worksheet(b, "AG-002", date(2026, m, 1)) for m in range(1, 13)), key=lambda w: len(w.exceptions))
    page, context, requests = show(browser, render("worksheet.html", **worksheet_context(b, ws)), tmp_path, "worksheet")
    try:
        assert requests == []
        assert visible_text(page, "#title").startswith("Reconciliation worksheet: AG-002")
        assert visible_text(page, "#unexplained") == "Unexplained remainder $0.00"
        assert "Every cent is explained." in visible_text(page, "#worksheet-tie")
        assert page.locator("#exception-table tr[data-id]").count() == len(ws.exceptions) >= 2
        assert page.locator("#items tr.unexplained").count() == 0
    finally:
        context.close()


def test_a_coordinator_notice_renders_each_action_and_its_rule(browser: Any, tmp_path: Path) -> None:
    b = books()
    notice = max((n for p in ("AG-001", "AG-002", "AG-003") for n in notices_for(b, payer_id=p)
                  if n.recipient == "agency_coordinator"), key=lambda n: len(n.actions))
    page, context, requests = show(browser, notice.html, tmp_path, "notice")
    try:
        assert requests == []
        assert visible_text(page, "#notice-id") == notice.notice_id
        assert page.locator(".action").count() == len(notice.actions) >= 2
        assert page.locator(".action .rule").first.is_visible()
        due = notice.total_due_cents
        assert visible_text(page, "#total-due") == f"${due // 100:,}.{due % 100:02d}"
    finally:
        context.close()


def test_a_member_statement_renders_summary_charts_and_refund_lines(browser: Any, tmp_path: Path) -> None:
    b = books()
    member = next(a.account_id for a in sorted(b.accounts.values(), key=lambda a: a.account_id)
                  if any(r.returned_by for m in a.months.values() for r in m.refunds))
    page, context, requests = show(browser, render_document("member", b, account_id=member), tmp_path,
                                   "member-statement")
    try:
        assert requests == []
        assert visible_text(page, "#title") == f"Statement of account {member}"
        assert page.locator("#summary").bounding_box()["y"] < page.locator("#months").bounding_box()["y"]
        assert page.locator("tr.refund-issued").count() >= 1 and page.locator("tr.refund-returned").count() >= 1
        chart = page.locator("#chart-billed-paid svg")
        assert chart.count() == 1 and chart.bounding_box()["width"] > 300
        assert "Verified intact" in visible_text(page, "#footer")
        page.emulate_media(media="print")
        assert page.locator("#statement").is_visible()
    finally:
        context.close()


def test_an_agency_statement_renders_summary_contents_and_aging_that_ties(browser: Any, tmp_path: Path) -> None:
    b = books()
    page, context, requests = show(browser, render_document("agency", b, payer_id="AG-002"), tmp_path,
                                   "agency-statement")
    try:
        assert requests == []
        assert visible_text(page, "#title") == "Agency statement: AG-002"
        order = [page.locator(s).bounding_box()["y"] for s in ("#summary", "#contents", "#charts", "#members")]
        assert order == sorted(order)
        tie = visible_text(page, "#aging-tie")
        balance = visible_text(page, "#balance .value")
        assert tie.split("= balance ")[1].startswith(balance)
        assert page.locator("#chart-aging svg, #chart-aging .nochart").count() == 1
        assert "left out" in visible_text(page, "#members-summary")
    finally:
        context.close()
