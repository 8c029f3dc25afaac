"""The notice rule: a notice_issued is recorded on its recipient's account, once, and changes no amount."""

from __future__ import annotations

from datetime import date

import pytest

from events.codec import EventDecodeError, decode_input, encode
from events.types import NoticeIssued
from processor.rules.base import Rejected
from tests.unit.builders import FEB, JAN, T0, Ledger, bill, enroll, pay, rate


def notice(event_id: str = "n-1", *, account: str = "payer:AG-001", notice_id: str = "N1",
           recipient: str = "agency_coordinator", recipient_id: str = "AG-001",
           ids: tuple[str, ...] = ("d1",)) -> NoticeIssued:
    return NoticeIssued(
        event_id=event_id, account_id=account, effective_on=FEB, occurred_at=T0, notice_id=notice_id,
        recipient=recipient, recipient_id=recipient_id, discrepancy_ids=ids, known_at=T0,  # type: ignore[arg-type]
        document_sha256="a" * 64,
    )


def test_a_notice_is_recorded_on_the_agency_payer_account_and_changes_no_month() -> None:
    led = Ledger()
    led.apply(rate(78_412), enroll(), bill(78_412, month=JAN), pay(70_000, month=JAN))
    before = {k: (m.billed_cents, m.paid_cents, m.balance_cents) for k, m in led.account().months.items()}
    underpaid = led.one_open("underpaid")
    (out,) = led.apply(notice(ids=(underpaid.discrepancy_id,)))
    assert not out.touched and not out.emitted
    (record,) = led.account("payer:AG-001").notices
    assert (record.notice_id, record.recipient_id, record.discrepancy_ids, record.issued_on) == (
        "N1", "AG-001", (underpaid.discrepancy_id,), FEB)
    assert {k: (m.billed_cents, m.paid_cents, m.balance_cents) for k, m in led.account().months.items()} == before
    assert led.one_open("underpaid") == underpaid  # a notice settles nothing


def test_a_notice_id_is_issued_once_and_on_its_recipients_account() -> None:
    led = Ledger()
    led.apply(notice())
    with pytest.raises(Rejected, match="already issued"):
        led.apply(notice("n-2"))
    with pytest.raises(Rejected, match="belongs on account payer:AG-001"):
        led.apply(notice("n-3", account="M000001", notice_id="N2"))
    led.apply(notice("n-4", account="M000001", notice_id="N3", recipient="member", recipient_id="M000001"))
    assert [n.notice_id for n in led.account("M000001").notices] == ["N3"]


def test_a_notice_must_name_a_discrepancy_and_a_document_hash() -> None:
    raw = encode(notice())
    assert decode_input(raw) == notice()
    with pytest.raises(EventDecodeError) as no_ids:
        decode_input(raw.replace(b'["d1"]', b"[]"))
    assert no_ids.value.field == "discrepancy_ids"
    with pytest.raises(EventDecodeError) as bad_hash:
        decode_input(raw.replace(b"a" * 64, b"not-a-hash"))
    assert bad_hash.value.field == "document_sha256"
    assert date(2026, 2, 1) == notice().effective_on
