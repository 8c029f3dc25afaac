"""The workbench's server side over an in-memory ledger folded by the real BatchProcessor: logins,
CSRF, roles, the queue, actions as events, entry forms, as-of views and the JSON API."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from events.types import DiscrepancyNoted, DiscrepancyWaived, PaymentReceived
from processor.settings import Settings
from tests.unit.builders import AGENCY, UMP_EMP, bill, enroll, pay, rate
from tests.unit.web_harness import PASSWORD, csrf, form_tokens, login, make_web, post_form

pytestmark = pytest.mark.filterwarnings("ignore")


def setup_books(ledger: Any) -> dict[str, str]:
    """Three members: M000001 short $84.12 (AG-001), M000002 short $284.12 (AG-001), M000003 short (AG-002)."""
    ledger.fold(
        rate(UMP_EMP), enroll(), bill(UMP_EMP), pay(70_000),
        enroll(account="M000002"), bill(UMP_EMP, account="M000002"), pay(50_000, account="M000002"),
        enroll(account="M000003", agency="AG-002"), bill(UMP_EMP, account="M000003", agency="AG-002"),
        pay(60_000, account="M000003", payer="AG-002"),
    )
    return {d.account_id: d.discrepancy_id for d in ledger.store.discrepancies(open_only=True)}


@pytest.fixture
def web() -> Any:
    client, ledger, users, ctx = make_web()
    ids = setup_books(ledger)
    return client, ledger, users, ctx, ids


def queue_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="([0-9a-f]+)">', html)


# ---------------------------------------------------------------------------------------------
# logging in


def test_pages_need_a_login_and_a_wrong_password_is_refused(web: Any) -> None:
    client, *_ = web
    assert client.get("/queue").headers["location"] == "/login?next=/queue"
    assert client.get("/api/discrepancies").status_code == 401
    refused = login(client, "sam", "not the password")
    assert refused.status_code == 401 and "wrong login or password" in refused.text
    assert login(client, "sam").headers["location"] == "/queue"
    assert client.get("/queue").status_code == 200


def test_logins_are_throttled_after_repeated_failures_even_with_the_right_password(web: Any) -> None:
    client, _ledger, _users, ctx, _ids = web
    for _ in range(ctx.settings.web.login_failures_max):
        assert login(client, "kim", "guess guess guess").status_code == 401
    throttled = login(client, "kim")
    assert throttled.status_code == 429 and "too many failed logins" in throttled.text
    assert login(client, "sam").status_code == 303  # another person is not held back


def test_a_form_without_its_csrf_token_is_refused(web: Any) -> None:
    client, _ledger, _users, _ctx, ids = web
    login(client, "sam")
    page = client.get(f"/discrepancies/{ids['M000001']}")
    token = form_tokens(page.text)[f"/discrepancies/{ids['M000001']}/note"]
    refused = client.post(f"/discrepancies/{ids['M000001']}/note", data={"form_token": token, "note": "x"})
    assert refused.status_code == 403
    no_cookie_login = type(client)(client.app).post("/login", data={"login": "sam", "password": PASSWORD})
    assert no_cookie_login.status_code == 403


# ---------------------------------------------------------------------------------------------
# the queue and roles


def test_the_queue_filters_and_a_coordinator_sees_only_their_agency(web: Any) -> None:
    client, _ledger, _users, _ctx, ids = web
    login(client, "sam")
    assert sorted(queue_ids(client.get("/queue").text)) == sorted(ids.values())
    assert queue_ids(client.get("/queue?agency=AG-002").text) == [ids["M000003"]]
    by_amount = queue_ids(client.get("/queue?sort=amount").text)
    assert by_amount == [ids["M000002"], ids["M000003"], ids["M000001"]]  # $284.12, $184.12, $84.12 short
    partial = client.get("/queue?rows=1&kind=underpaid", headers={"HX-Request": "true"})
    assert "<html" not in partial.text and len(queue_ids(partial.text)) == 3

    other = type(client)(client.app, follow_redirects=False)
    login(other, "otto")  # coordinator of AG-002
    assert queue_ids(other.get("/queue?agency=AG-001").text) == [ids["M000003"]]
    assert other.get(f"/discrepancies/{ids['M000001']}").status_code == 404
    assert other.get("/accounts/M000001").status_code == 404
    assert [r["discrepancy_id"] for r in other.get("/api/discrepancies").json()["rows"]] == [ids["M000003"]]


def test_an_auditor_reads_everything_and_can_post_nothing(web: Any) -> None:
    client, ledger, _users, _ctx, ids = web
    login(client, "ava")
    page = client.get(f"/discrepancies/{ids['M000001']}")
    assert page.status_code == 200 and "changes nothing" in page.text and not form_tokens(page.text)
    refused = client.post(f"/discrepancies/{ids['M000001']}/note", data={"csrftoken": csrf(page.text), "note": "x"})
    assert refused.status_code == 403
    assert client.get("/entries/payment").status_code == 403
    assert client.get("/accounts/M000003").status_code == 200
    assert not ledger.published


# ---------------------------------------------------------------------------------------------
# actions are events


def test_assigning_and_noting_publish_events_the_ledger_folds_and_the_page_shows(web: Any) -> None:
    client, ledger, _users, _ctx, ids = web
    login(client, "sam")
    did = ids["M000001"]
    url = f"/discrepancies/{did}"
    assert post_form(client, url, f"{url}/assign", assignee="sam").headers["location"] == url
    note = "payroll says the <b>tier</b> changed in March"
    post_form(client, url, f"{url}/note", note=note)
    page = client.get(url).text
    assert '<dd data-testid="assignee">sam</dd>' in page
    assert "payroll says the &lt;b&gt;tier&lt;/b&gt; changed in March" in page  # autoescaped
    noted = [e for e in ledger.published if isinstance(e, DiscrepancyNoted)]
    assert len(noted) == 1 and (noted[0].user, noted[0].role, noted[0].source) == ("sam", "specialist", "web:sam")


def test_sending_the_same_form_twice_is_one_event(web: Any) -> None:
    client, ledger, _users, _ctx, ids = web
    login(client, "sam")
    url = f"/discrepancies/{ids['M000001']}"
    page = client.get(url)
    data = {"csrftoken": csrf(page.text), "form_token": form_tokens(page.text)[f"{url}/note"], "note": "called"}
    assert client.post(f"{url}/note", data=data).status_code == 303
    assert client.post(f"{url}/note", data=data).status_code == 303
    assert len({e.event_id for e in ledger.published}) == 1 and len(ledger.published) == 2
    assert ledger.store.counts().duplicates == 1
    changed = client.post(f"{url}/note", data={**data, "note": "something else"})
    assert changed.status_code == 400 and "already sent as event" in changed.text


def test_a_waiver_above_the_limit_waits_for_a_supervisor_who_approves_it(web: Any) -> None:
    client, ledger, _users, _ctx, ids = web
    did = ids["M000002"]
    url = f"/discrepancies/{did}"
    login(client, "sam")
    page = client.get(url).text
    assert "an adjustment of <b>-$284.12</b>" in page and "a supervisor approves it" in page
    post_form(client, url, f"{url}/waive", amount_cents="-28412", reason="member in hardship")
    page = client.get(url).text
    assert "awaits approval" in page and f"{url}/approve" not in form_tokens(page)
    supervisor = type(client)(client.app, follow_redirects=False)
    login(supervisor, "sue")
    post_form(supervisor, url, f"{url}/approve", request_event_id=ledger.published[-1].event_id, reason="ok")
    page = supervisor.get(url).text
    assert 'data-testid="status">waived<' in page
    assert ledger.store.balance("M000002").months[0].balance_cents == 0  # type: ignore[union-attr]
    assert [type(e) for e in ledger.published[-2:]] == [DiscrepancyWaived, type(ledger.published[-1])]


def test_an_action_the_ledger_would_refuse_is_named_on_the_page_and_not_published(web: Any) -> None:
    client, ledger, _users, _ctx, ids = web
    login(client, "sam")
    url = f"/discrepancies/{ids['M000001']}"
    refused = post_form(client, url, f"{url}/waive", amount_cents="-1", reason="typo")
    assert refused.status_code == 400 and "is -$84.12, not -$0.01" in refused.text
    assert not ledger.published


def test_a_pending_action_is_shown_until_the_ledger_applies_it(web: Any) -> None:
    client, ledger, _users, _ctx, ids = web
    login(client, "sam")
    url = f"/discrepancies/{ids['M000001']}"
    ledger.hold = True
    post_form(client, url, f"{url}/assign", assignee="sam")
    page = client.get(url).text
    event_id = ledger.held[0].event_id
    assert 'data-testid="pending"' in page and f"/events/{event_id}/status" in page
    assert client.get(f"/events/{event_id}/status").headers.get("HX-Refresh") is None
    ledger.release()
    assert client.get(f"/events/{event_id}/status").headers["HX-Refresh"] == "true"
    assert 'data-testid="pending"' not in client.get(url).text


# ---------------------------------------------------------------------------------------------
# entry forms


def test_a_direct_payment_typed_in_dollars_resolves_the_underpaid_month(web: Any) -> None:
    client, ledger, _users, _ctx, ids = web
    login(client, "sam")
    account = client.get("/accounts/M000001").text
    assert "coverage_month=2026-01&amount=84.12" in account
    sent = post_form(client, "/entries/payment?account_id=M000001", "/entries/payment", account_id="M000001",
                     coverage_month="2026-01", amount="$84.12", method="check", payment_id="CHK 1001")
    event_id = sent.headers["location"].removeprefix("/events/")
    (payment,) = [e for e in ledger.published if isinstance(e, PaymentReceived)]
    assert (payment.event_id, payment.amount_cents, payment.payer_id, payment.method) == (
        event_id, 8_412, "M000001", "check")
    page = client.get(f"/events/{event_id}").text
    assert 'data-testid="event-applied"' in page and f"/discrepancies/{ids['M000001']}" in page
    assert ledger.store.discrepancy(ids["M000001"]).status == "resolved"  # type: ignore[union-attr]


@pytest.mark.parametrize("fields, field, reason", [
    ({"amount": "12.345"}, "amount", "fraction of a cent"),
    ({"amount": "ten"}, "amount", "not a decimal amount"),
    ({"amount": "-5.00"}, "amount", "must be positive"),
    ({"coverage_month": "2026-13"}, "coverage_month", "date"),
])
def test_entry_errors_name_the_field(web: Any, fields: dict[str, str], field: str, reason: str) -> None:
    client, ledger, *_ = web
    login(client, "sam")
    sent = post_form(client, "/entries/payment", "/entries/payment",
                     **{"account_id": "M000001", "coverage_month": "2026-01", "amount": "1.00", **fields})
    assert sent.status_code == 400 and reason in sent.text
    assert f'data-testid="form-error">{field.replace("_", " ")}:' in sent.text
    assert not ledger.published


def test_a_refund_of_a_payment_the_ledger_does_not_hold_is_refused_by_its_own_rules(web: Any) -> None:
    client, ledger, *_ = web
    login(client, "sam")
    sent = post_form(client, "/entries/refund", "/entries/refund", account_id="M000001", amount="5.00",
                     payment_id="P-nope", reason="returned")
    assert sent.status_code == 400 and "payment P-nope is unknown on account M000001" in sent.text
    assert not ledger.published


# ---------------------------------------------------------------------------------------------
# as of (E, R), the API


def test_the_queue_as_of_a_recorded_time_before_an_action_shows_it_without_the_action(web: Any) -> None:
    client, _ledger, _users, _ctx, ids = web
    login(client, "sam")
    before = datetime.now(UTC)
    url = f"/discrepancies/{ids['M000001']}"
    post_form(client, url, f"{url}/dismiss", reason="agency confirmed the tier; billing will credit")
    now_open = queue_ids(client.get("/queue").text)
    assert ids["M000001"] not in now_open
    then = client.get("/queue", params={"known_at": before.isoformat()}).text
    assert ids["M000001"] in queue_ids(then) and 'data-testid="asof"' in then
    closed = client.get("/queue?state=closed").text
    assert queue_ids(closed) == [ids["M000001"]]


def test_the_account_page_shows_months_rates_shares_and_history_as_of_any_time(web: Any) -> None:
    client, ledger, *_ = web
    login(client, "sam")
    page = client.get("/accounts/M000001").text
    assert "UMP-CLASSIC/EMP $784.12 = $117.61 employee + $666.51 employer (rate UMP-CLASSIC-EMP-202601)" in page
    for event in ("enrollment_changed", "premium_billed", "payment_received", "discrepancy_opened"):
        assert event in page
    before = datetime.now(UTC)
    ledger.fold(pay(8_412, payment_id="P-late"))
    assert "P-late" in client.get("/accounts/M000001").text
    then = client.get("/accounts/M000001", params={"known_at": before.isoformat()}).text
    assert "P-late" not in then and 'data-testid="asof"' in then


def test_the_api_answers_services_with_tokens_and_keeps_a_coordinators_to_their_agency(web: Any) -> None:
    client, ledger, users, _ctx, ids = web
    service = users.add_token("billing-system", "supervisor", None)
    agency = users.add_token("ag2-portal", "agency_coordinator", "AG-002")
    auth = {"Authorization": f"Bearer {service}"}
    page = client.get("/api/discrepancies", params={"agency": AGENCY, "sort": "amount"}, headers=auth).json()
    assert page["total"] == 2 and [r["discrepancy_id"] for r in page["rows"]] == [ids["M000002"], ids["M000001"]]
    assert client.get("/api/discrepancies", headers={"Authorization": "Bearer blt_x_y"}).status_code == 401
    mine = client.get("/api/agencies", headers={"Authorization": f"Bearer {agency}"}).json()
    assert [a["agency_id"] for a in mine] == ["AG-002"]
    assert client.get(f"/api/discrepancies/{ids['M000001']}",
                      headers={"Authorization": f"Bearer {agency}"}).status_code == 404
    account = client.get("/api/accounts/M000001", headers=auth).json()
    assert account["balance_cents"] == UMP_EMP - 70_000 and account["agency_id"] == AGENCY
    history = client.get("/api/accounts/M000001/history", headers=auth).json()
    assert [h["event_type"] for h in history][:3] == ["enrollment_changed", "premium_billed", "payment_received"]
    statement = client.get("/api/statements", params={"account": "M000001"}, headers=auth).json()
    assert statement["members"][0]["totals"]["balance_cents"] == 8_412
    sent = client.post(f"/api/discrepancies/{ids['M000001']}/actions", headers=auth,
                       json={"action": "note", "note": "from billing", "key": "ticket-4711"})
    assert sent.status_code == 202
    again = client.post(f"/api/discrepancies/{ids['M000001']}/actions", headers=auth,
                        json={"action": "note", "note": "from billing", "key": "ticket-4711"})
    assert again.json()["event_id"] == sent.json()["event_id"]
    assert client.get(f"/api/events/{sent.json()['event_id']}", headers=auth).json()["state"] == "applied"
    assert ledger.store.discrepancy(ids["M000001"]).notes == 1  # type: ignore[union-attr]
    spec = client.get("/api/openapi.json").json()
    assert {"/api/discrepancies", "/api/statements", "/api/agencies", "/api/dead-letters"} <= set(spec["paths"])


def test_settings_bound_the_request_body() -> None:
    client, *_ = make_web(Settings(partitions=2, web={"request_body_bytes_max": 1024}))
    assert client.post("/login", content=b"x" * 2048,
                       headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413


def test_a_body_that_does_not_say_its_length_is_refused_past_the_limit_too() -> None:
    client, *_ = make_web(Settings(partitions=2, web={"request_body_bytes_max": 1024}))

    def chunks() -> Any:
        for _ in range(4):
            yield b"x" * 512

    sent = client.post("/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert sent.status_code == 413


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example/x", "https://evil.example/"])
def test_after_login_only_a_path_of_this_site_is_followed(web: Any, target: str) -> None:
    client, *_ = web
    page = client.get("/login")
    sent = client.post("/login", data={"login": "sam", "password": PASSWORD, "next": target,
                                       "csrftoken": csrf(page.text)})
    assert sent.headers["location"] == "/queue"
