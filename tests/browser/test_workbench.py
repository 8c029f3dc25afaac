"""The workbench in a real browser (Debian's chromium, driven by Playwright) against the real stack: the
session's Tansu broker and PostgreSQL, the real processor and relay, uvicorn serving the web app.

One stack and one browser serve the whole module; each test uses its own members' discrepancies, so the
tests do not depend on each other's order.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from events.types import Event
from processor.app import Ledger, open_ledger, run_services
from processor.settings import Settings
from projections.model import QueueQuery
from tests.browser.screenshots import CHROMIUM, VIEWPORT, capture
from tests.conftest import unique_topics
from tests.unit.builders import UMP_EMP, bill, day, enroll, pay, rate

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no /usr/bin/chromium: make test installs it (apt)"),
    pytest.mark.filterwarnings("ignore"),
]
REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 30_000
PASSWORD = "a long browser-test password"
PEOPLE = (("sam", "Sam Specialist", "specialist", None), ("sue", "Sue Supervisor", "supervisor", None),
          ("ava", "Ava Auditor", "auditor", None), ("otto", "Otto Coordinator", "agency_coordinator", "AG-002"))


def program() -> list[Event]:
    """Six members with one discrepancy each; AG-001 pays M1 to M3 and M6, AG-002 pays M4 and M5."""
    events: list[Event] = [rate(UMP_EMP)]
    for account, agency in (("M1", "AG-001"), ("M2", "AG-001"), ("M3", "AG-001"), ("M4", "AG-002"),
                            ("M5", "AG-002"), ("M6", "AG-001")):
        events += [enroll(account=account, agency=agency), bill(UMP_EMP, account=account, agency=agency)]
    events += [
        pay(70_000, account="M1", payer="M1", method="direct", payment_id="P-M1"),  # member short $84.12
        pay(50_000, account="M2", payer="AG-001", payment_id="P-M2"),  # short $284.12: a waiver needs approval
        pay(70_000, account="M3", payer="AG-001", payment_id="P-M3"),
        pay(60_000, account="M4", payer="AG-002", payment_id="P-M4"),
        pay(70_000, account="M6", payer="AG-001", payment_id="P-M6"),
        day(date(2026, 3, 5)),  # M5 was never paid: missing
    ]
    return events


@dataclass
class Stack:
    base: str
    ledger: Ledger
    ids: dict[str, str]  # account -> its discrepancy
    errors: list[BaseException]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, predicate: Any, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(broker: Any, pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import psycopg
    import uvicorn
    from psycopg import sql

    from processor.entrypoints.web.app import create_app
    from processor.entrypoints.web.auth import PostgresUserStore
    from processor.entrypoints.web.commands import web_context

    name = f"web_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    port = _free_port()
    settings = Settings(
        kafka_bootstrap_servers=broker.bootstrap, database_url=pg_server.dsn_for(name), topics=unique_topics(),
        partitions=2, data_dir=tmp_path_factory.mktemp("web"), merge_idle_ms=200,
        web={"port": port, "session_secret": "browser-tests-" + "s" * 40, "pending_poll_ms": 300},
    )
    errors: list[BaseException] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    try:
        with open_ledger(settings) as ledger:

            def services() -> None:
                try:
                    loop.run_until_complete(run_services(ledger, stop))
                except BaseException as exc:  # reported by the tests (check) and at teardown
                    errors.append(exc)

            worker = threading.Thread(target=services, name="processor", daemon=True)
            worker.start()
            watcher = ledger.store()
            with ledger.publisher() as pub:
                pub.publish(program())
                pub.flush()
                sent = pub.records_sent
            _wait("the program to be applied", lambda: watcher.counts().received >= sent or errors)
            users = PostgresUserStore(ledger.dsn)
            for login, display, role, agency in PEOPLE:
                users.add_user(login, display, role, agency, PASSWORD)
            users.close()
            # one user the way an administrator adds them: the command line
            env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
            env.update({"PYTHONPATH": str(REPO_ROOT), "LEDGER_DATABASE_URL": ledger.dsn,
                        "LEDGER_DATA_DIR": str(settings.data_dir)})
            added = subprocess.run(
                [sys.executable, "-m", "processor.cli", "user", "add", "cora", "--role", "agency_coordinator",
                 "--agency", "AG-001", "--name", "Cora Coordinator", "--password-stdin"],
                input=PASSWORD + "\n", env=env, capture_output=True, text=True, timeout=120, check=False)
            assert added.returncode == 0, added.stderr
            ids = {d.account_id: d.discrepancy_id
                   for d in watcher.discrepancy_queue(QueueQuery(limit=100)).rows}
            assert sorted(ids) == ["M1", "M2", "M3", "M4", "M5", "M6"], ids
            with web_context(settings, ledger.dsn, ledger.publisher()) as ctx:
                server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port,
                                                       log_level="warning", lifespan="off"))
                web = threading.Thread(target=server.run, name="uvicorn", daemon=True)
                web.start()
                _wait("uvicorn", lambda: server.started)
                try:
                    yield Stack(base=f"http://127.0.0.1:{port}/", ledger=ledger, ids=ids, errors=errors)
                finally:
                    server.should_exit = True
                    web.join(30)
                    loop.call_soon_threadsafe(stop.set)
                    worker.join(60)
        assert not errors, f"the processor failed: {errors!r}"
    finally:
        loop.close()
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()
        assert not stack.errors, f"the processor failed: {stack.errors!r}"


def log_in(page: Any, stack: Stack, login: str) -> None:
    page.goto(f"{stack.base}login")
    page.fill("#login", login)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/queue")


def queue_ids(page: Any) -> list[str]:
    return page.locator("table[data-testid=queue] tbody tr[data-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.id)")


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


# ---------------------------------------------------------------------------------------------


def test_a_specialist_logs_in_filters_the_queue_and_opens_a_discrepancy(page: Any, stack: Stack) -> None:
    log_in(page, stack, "sam")
    expect()(page.get_by_test_id("who")).to_contain_text("Sam Specialist")
    assert sorted(queue_ids(page)) == sorted(stack.ids.values())
    page.select_option("#f-agency", "AG-002")  # htmx swaps the rows in
    expect()(page.get_by_test_id("queue-total")).to_have_text("2 discrepancies")
    assert sorted(queue_ids(page)) == sorted([stack.ids["M4"], stack.ids["M5"]])
    page.select_option("#f-kind", "missing_payment")
    expect()(page.get_by_test_id("queue-total")).to_have_text("1 discrepancy")
    assert "agency=AG-002" in page.url and "kind=missing_payment" in page.url
    page.click(f"a[href='/discrepancies/{stack.ids['M5']}']")
    expect()(page.get_by_test_id("explanation")).to_contain_text("$784.12 billed for 2026-01 was due 2026-01-01")
    expect()(page.locator("dl.facts")).to_contain_text("plan setting grace_days")


def test_assigning_and_noting_a_discrepancy_are_applied_by_the_ledger_and_shown(page: Any, stack: Stack) -> None:
    log_in(page, stack, "sam")
    page.goto(f"{stack.base}discrepancies/{stack.ids['M3']}")
    page.click("button:has-text('Assign to me')")
    expect()(page.get_by_test_id("assignee")).to_have_text("sam")
    page.fill("#note", "Payroll confirms the March deduction was keyed as $700.00")
    page.click("button:has-text('Add note')")
    expect()(page.get_by_test_id("last-action")).to_have_text(
        "sam: Payroll confirms the March deduction was keyed as $700.00")
    history = page.get_by_test_id("history")
    expect()(history).to_contain_text("discrepancy_assigned")
    expect()(history).to_contain_text("discrepancy_noted")
    expect()(history).to_contain_text("web:sam")
    page.goto(f"{stack.base}queue?assignee=me")
    assert queue_ids(page) == [stack.ids["M3"]]


def test_a_waiver_above_the_limit_waits_until_a_supervisor_approves_it(page: Any, stack: Stack) -> None:
    url = f"{stack.base}discrepancies/{stack.ids['M2']}"
    log_in(page, stack, "sam")
    page.goto(url)
    expect()(page.get_by_test_id("actions")).to_contain_text("an adjustment of -$284.12")
    expect()(page.get_by_test_id("actions")).to_contain_text("a supervisor approves it")
    page.fill("#waive-reason", "member in documented hardship")
    page.click("button:has-text('Waive')")
    expect()(page.get_by_test_id("pending-approval")).to_contain_text("waiver of -$284.12 by sam awaits approval")
    assert page.locator("button:has-text('Approve')").count() == 0  # not by the one who asked
    page.click("header button:has-text('Log out')")
    log_in(page, stack, "sue")
    page.goto(f"{stack.base}queue?state=pending")
    assert queue_ids(page) == [stack.ids["M2"]]
    page.goto(url)
    page.fill("#approve-reason", "hardship letter on file")
    page.click("button:has-text('Approve')")
    expect()(page.get_by_test_id("status")).to_have_text("waived")
    page.goto(f"{stack.base}accounts/M2")
    expect()(page.get_by_test_id("balance")).to_have_text("balance $0.00")
    expect()(page.get_by_test_id("months")).to_contain_text("-$284.12")


def test_a_direct_payment_entered_in_dollars_resolves_the_underpaid_month(page: Any, stack: Stack) -> None:
    log_in(page, stack, "sam")
    page.goto(f"{stack.base}accounts/M1")
    expect()(page.locator("tr[data-month='2026-01']")).to_contain_text("underpaid")
    page.click("tr[data-month='2026-01'] a:has-text('post payment')")
    expect()(page.locator("#amount")).to_have_value("84.12")
    page.fill("#payment_id", "CHK-20419")
    page.click("button:has-text('Send to the ledger')")
    expect()(page.get_by_test_id("event-applied")).to_be_visible()
    expect()(page.get_by_test_id("caused")).to_contain_text("discrepancy_resolved")
    page.click("a:has-text('Open the account')")
    expect()(page.locator("tr[data-month='2026-01'] [data-testid=month-balance]")).to_have_text("$0.00")
    expect()(page.get_by_test_id("history")).to_contain_text("CHK-20419")


def test_a_typing_error_in_an_amount_is_named_and_nothing_is_sent(page: Any, stack: Stack) -> None:
    from processor.entrypoints.web.auth import PostgresUserStore

    users = PostgresUserStore(stack.ledger.dsn)
    sent_before = len(users.submissions(account_id="M4"))
    log_in(page, stack, "sam")
    page.goto(f"{stack.base}entries/payment?account_id=M4&coverage_month=2026-01")
    page.fill("#amount", "184.123")
    page.click("button:has-text('Send to the ledger')")
    expect()(page.get_by_test_id("form-error")).to_contain_text("amount: '184.123' has a fraction of a cent")
    expect()(page.locator("#amount")).to_have_value("184.123")  # what was typed stays for correcting
    assert len(users.submissions(account_id="M4")) == sent_before
    users.close()


def test_an_auditor_reads_everything_and_cannot_post(page: Any, stack: Stack) -> None:
    log_in(page, stack, "ava")
    assert stack.ids["M4"] in queue_ids(page) and stack.ids["M5"] in queue_ids(page)
    page.goto(f"{stack.base}discrepancies/{stack.ids['M4']}")
    expect()(page.get_by_test_id("actions")).to_contain_text("An auditor reads everything and changes nothing")
    assert page.locator("[data-testid=actions] form").count() == 0
    page.goto(f"{stack.base}entries/payment")
    expect()(page.locator("main")).to_contain_text("does not enter events")
    token = page.context.cookies()
    csrf = next(c["value"] for c in token if c["name"] == "ledger_csrf")
    forged = page.request.post(f"{stack.base}discrepancies/{stack.ids['M4']}/note",
                               form={"csrftoken": csrf, "note": "an auditor's note", "form_token": "x"})
    assert forged.status == 403
    page.goto(f"{stack.base}accounts/M4")
    expect()(page.get_by_test_id("months")).to_be_visible()


def test_an_agency_coordinator_sees_and_answers_only_their_agencys_items(page: Any, stack: Stack) -> None:
    log_in(page, stack, "otto")
    assert sorted(queue_ids(page)) == sorted([stack.ids["M4"], stack.ids["M5"]])
    assert page.locator("#f-agency").count() == 0
    page.goto(f"{stack.base}discrepancies/{stack.ids['M1']}")
    expect()(page.locator("main")).to_contain_text("no such discrepancy among your agency's items")
    page.goto(f"{stack.base}discrepancies/{stack.ids['M4']}")
    page.fill("#note", "Payroll corrects the deduction from the next pay date")
    page.click("button:has-text('Add note')")
    expect()(page.get_by_test_id("last-action")).to_contain_text("otto: Payroll corrects the deduction")
    page.click("header button:has-text('Log out')")
    log_in(page, stack, "cora")  # added with `benefits-ledger user add`
    assert stack.ids["M4"] not in queue_ids(page) and stack.ids["M6"] in queue_ids(page)


def test_replaying_to_a_recorded_time_before_an_action_shows_the_queue_without_it(page: Any, stack: Stack) -> None:
    log_in(page, stack, "sam")
    before = datetime.now(UTC)
    page.goto(f"{stack.base}discrepancies/{stack.ids['M6']}")
    page.fill("#dismiss-reason", "agency refunded the member outside the ledger; credit memo 88")
    page.click("button:has-text('Close')")
    expect()(page.get_by_test_id("status")).to_have_text("closed")
    page.goto(f"{stack.base}queue")
    assert stack.ids["M6"] not in queue_ids(page)
    page.fill("#f-known", before.isoformat())
    page.click("button:has-text('Filter')")
    expect()(page.get_by_test_id("asof")).to_contain_text("As the ledger knew it at")
    assert stack.ids["M6"] in queue_ids(page)
    page.goto(f"{stack.base}queue?state=closed")
    assert queue_ids(page) == [stack.ids["M6"]]


def test_the_main_pages_render_for_the_screenshots(page: Any, stack: Stack, tmp_path: Path) -> None:
    log_in(page, stack, "sam")
    folder = Path(os.environ.get("BROWSER_SCREENSHOTS_DIR", tmp_path))
    shots = capture(page, stack.base, folder)
    assert [p.name for p in shots] == ["queue.png", "discrepancy.png", "account.png", "direct-payment.png"]
    assert all(p.stat().st_size > 10_000 for p in shots)


def test_replay_of_the_archive_equals_the_live_books_after_the_work(stack: Stack) -> None:
    """Run last: every action above is in the archive, and folding it again gives the same rows."""
    from replay.verify import verify

    report = verify(stack.ledger.dsn, stack.ledger.settings.plan)
    assert report.mismatches == [] and report.events_replayed > 0
    assert report.tables["discrepancy"] >= len(stack.ids)
