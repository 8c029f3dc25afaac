"""Notices: a coordinator's and a COBRA member's, with each action, amount, due date and rule; issuing
one is a notice_issued the fold records; the notice is reproduced exactly from replay as of its R."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta

from events.codec import body_hash, decode_input, encode
from events.types import EnrollmentChanged, InputEvent
from processor.settings import PlanSettings
from replay.archive import ArchivedEvent
from replay.books import books_from
from replay.documents import html_to_pdf
from replay.notices import notices_for, reproduce
from tests.unit.builders import AGENCY, bill, day, enroll, pay, rate

MAR = date(2026, 3, 1)
RATE = 78_412


def rows(timed: list[tuple[datetime, InputEvent]]) -> list[ArchivedEvent]:
    out = []
    for seq, (at, e) in enumerate(timed, start=1):
        body = encode(e)
        tag = type(e).__struct_config__.tag
        assert isinstance(tag, str)
        out.append(ArchivedEvent(seq, 0, e.event_id, tag, e.account_id, at, body, body_hash(body)))
    return out


T1 = datetime(2026, 4, 16, 9, tzinfo=UTC)


def history() -> list[tuple[datetime, InputEvent]]:
    """AG-001: M1 underpaid $100.00, M2 overpaid $20.00, M3 unpaid past the grace period. C1, on COBRA and
    paying directly, pays $10.00 short (within the lesser of $50 and 10%)."""
    cobra = enroll(event_id="enr-c1", account="C1", begin=MAR, status="cobra", agency=AGENCY)
    cobra = EnrollmentChanged(**{**{f: getattr(cobra, f) for f in cobra.__struct_fields__},
                                 "elected_on": date(2026, 1, 20), "cobra_start": date(2026, 2, 1)})
    cobra_bill = (RATE * 102 + 50) // 100
    at = datetime(2026, 3, 10, tzinfo=UTC)
    events: list[InputEvent] = [rate(RATE, event_id="rate", month_from=MAR)]
    for m in ("M1", "M2", "M3"):
        events += [enroll(event_id=f"enr-{m}", account=m, begin=MAR), bill(RATE, month=MAR, account=m,
                                                                          event_id=f"bill-{m}", due_on=MAR)]
    events += [pay(RATE - 10_000, month=MAR, account="M1", event_id="pay-M1"),
               pay(RATE + 2_000, month=MAR, account="M2", event_id="pay-M2"),
               cobra, bill(cobra_bill, month=MAR, account="C1", event_id="bill-C1", due_on=MAR, agency=None),
               pay(cobra_bill - 1_000, month=MAR, account="C1", event_id="pay-C1", payer="C1", method="direct"),
               day(date(2026, 4, 15), event_id="day-0415")]
    return [(at, e) for e in events]


def test_the_coordinator_notice_lists_each_action_with_amount_due_date_and_rule() -> None:
    books = books_from(rows(history()), PlanSettings(), known_at=T1)
    (coordinator, member) = notices_for(books, payer_id=AGENCY)
    assert (coordinator.recipient, coordinator.recipient_id, coordinator.account_id) == (
        "agency_coordinator", AGENCY, "payer:AG-001")
    actions = {a.kind: a for a in coordinator.actions}
    assert set(actions) == {"missing_payment", "overpaid", "underpaid"}
    assert (actions["underpaid"].account_id, actions["underpaid"].amount_cents) == ("M1", 10_000)
    assert (actions["missing_payment"].account_id, actions["missing_payment"].amount_cents) == ("M3", RATE)
    assert (actions["overpaid"].amount_cents, actions["overpaid"].amount_label) == (2_000, "excess to credit or refund")
    assert actions["missing_payment"].due_on == MAR and "grace period ended March 31, 2026" in (
        actions["missing_payment"].due_label)
    assert coordinator.total_due_cents == 10_000 + RATE
    html = coordinator.html
    assert "agency <b>AG-001</b>" in html and "$884.12" in html  # $100.00 + $784.12 due in all
    assert "a payment may differ from what is owed by at most $1.00" in html  # the rule, in plain words
    assert member.recipient == "member" and member.recipient_id == "C1"


def test_the_cobra_shortfall_notice_is_the_regulations_notice_with_the_plans_reasonable_time() -> None:
    books = books_from(rows(history()), PlanSettings(cobra_shortfall_notice_days=45), known_at=T1)
    (notice,) = notices_for(books, account_id="C1")
    (action,) = notice.actions
    assert (action.kind, action.amount_cents, action.due_on) == ("cobra_shortfall", 1_000, date(2026, 5, 31))
    assert notice.issued_on == date(2026, 4, 16) and action.due_on == notice.issued_on + timedelta(days=45)
    assert "26 CFR 54.4980B-8" in action.rule and "reasonable time" in action.rule
    assert "pay by May 31, 2026 (45 days after this notice)" in notice.html


def test_an_issued_notice_is_folded_and_reproduced_exactly_from_replay_as_of_its_r() -> None:
    first = history()
    books = books_from(rows(first), PlanSettings(), known_at=T1)
    (notice, _) = notices_for(books, payer_id=AGENCY)
    issued = notice.event(occurred_at=T1 + timedelta(minutes=5))
    assert decode_input(encode(issued)) == issued
    # the notice is recorded a few minutes later; then M1 pays the rest, which resolves the underpayment
    later = [*first, (T1 + timedelta(minutes=5), issued),
             (T1 + timedelta(days=2), pay(10_000, month=MAR, account="M1", event_id="pay-M1-rest",
                                          payment_id="P-rest"))]
    archive = rows(later)
    everything = books_from(archive, PlanSettings(), known_at=T1 + timedelta(days=3))
    (record,) = everything.accounts["payer:AG-001"].notices
    assert (record.notice_id, record.discrepancy_ids) == (notice.notice_id, notice.discrepancy_ids)
    assert [n.notice_id for n, _ in everything.notices] == [notice.notice_id]
    # replay to the notice's R: the same document, byte for byte
    as_of = books_from([r for r in archive if r.recorded_at <= issued.known_at], PlanSettings(),
                       known_at=issued.known_at)
    again = reproduce(as_of, issued)
    assert again.html == notice.html and again.sha256 == issued.document_sha256
    # the same discrepancies rendered from the later books are another document (the M1 item is resolved)
    assert everything.result.discrepancies[notice.discrepancy_ids[-1]].status in ("open", "resolved")
    assert notices_for(everything, payer_id=AGENCY)[0].sha256 != issued.document_sha256


def test_a_notice_pdf_renders_with_its_total_due() -> None:
    from pypdf import PdfReader

    (notice, _) = notices_for(books_from(rows(history()), PlanSettings(), known_at=T1), payer_id=AGENCY)
    reader = PdfReader(io.BytesIO(html_to_pdf(notice.html)))
    text = " ".join(" ".join(p.extract_text() for p in reader.pages).split())
    assert len(reader.pages) >= 1 and "$884.12" in text and notice.notice_id in text and "26 CFR" not in text
