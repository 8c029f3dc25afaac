"""RemittanceReceived: the payer's account records a remittance and opens remittance_total_mismatch."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from events.codec import decode_input, encode
from events.topics import topic_types
from events.types import DiscrepancyAmountChanged, RemittanceReceived
from processor.rules.base import Rejected
from projections.model import PAYMENTS_STREAM
from tests.unit.builders import JAN, T0, TOPICS, Feed, Ledger, bill, day, make, pay, run


def remit(total: int, lines: int, *, event_id: str = "r-1", remittance: str = "TRN-1", payer: str = "AG-004",
          **changes: Any) -> RemittanceReceived:
    values: dict[str, Any] = dict(
        event_id=event_id, account_id=f"payer:{payer}", effective_on=JAN, occurred_at=T0, source="x12-820",
        remittance_id=remittance, payer_id=payer, payee_id="PE-1", method="ach", payment_date=JAN,
        trace_number=remittance, total_cents=total, lines_total_cents=lines, line_count=3,
    )
    values.update(changes)
    return RemittanceReceived(**values)


def lines(*amounts: int, remittance: str = "TRN-1", payer: str = "AG-004", advice: bool = False) -> list[Any]:
    """Remittance lines of three members for January (what an 820's RMR loops become)."""
    return [pay(a, account=f"M{i}", payer=payer, remittance=remittance, trace=remittance, event_id=f"line-{i}",
                payment_id=f"{remittance}-{i}", advice_only=advice) for i, a in enumerate(amounts, start=1)]


def billed(ledger: Ledger, *amounts: int) -> None:
    for i, amount in enumerate(amounts, start=1):
        ledger.apply(bill(amount, account=f"M{i}", event_id=f"bill-{i}"))


def test_a_remittance_whose_posted_lines_balance_opens_nothing() -> None:
    ledger = Ledger()
    ledger.apply(*lines(10_000, 10_000, 5_500), remit(25_500, 25_500))
    assert ledger.opened("remittance_total_mismatch") == []
    book = ledger.account("payer:AG-004").remittances["TRN-1"]
    assert (book.posted_count, book.posted_cents, book.judged) == (3, 25_500, True)


def test_a_total_beyond_the_posted_lines_opens_a_mismatch_and_the_excess_is_unapplied_cash() -> None:
    ledger = Ledger()
    ledger.apply(*lines(10_000, 10_000, 5_500), remit(26_000, 25_500))
    [opened] = ledger.opened("remittance_total_mismatch")
    assert (opened.expected_cents, opened.actual_cents) == (25_500, 26_000)
    assert opened.actor == "payroll" and opened.payer_id == "AG-004"
    assert opened.account_id == "payer:AG-004" and opened.coverage_month is None
    assert "$255.00" in opened.explanation and "$260.00" in opened.explanation
    assert ledger.unapplied["AG-004"] == 25_500 + 500  # three unbilled lines held, and the 5.00 beyond them


def test_a_line_that_never_arrives_is_a_mismatch_once_a_business_day_passes_the_payment_date() -> None:
    """The sender says three lines of 255.00; the ledger posted two (200.00): the lines total is the ledger's."""
    ledger = Ledger()
    ledger.apply(*lines(10_000, 10_000), remit(25_500, 25_500))
    assert ledger.opened("remittance_total_mismatch") == []  # the third line may still be on its way
    assert ledger.part.remittances_due == {"payer:AG-004": date(2026, 1, 4)}  # paid Jan 1 + 3 days for lines
    ledger.apply(day(date(2026, 1, 4)))
    assert ledger.opened("remittance_total_mismatch") == []
    ledger.apply(day(date(2026, 1, 5)))
    [opened] = ledger.opened("remittance_total_mismatch")
    assert (opened.expected_cents, opened.actual_cents) == (20_000, 25_500)
    assert "posted 2 of its 3 lines" in opened.explanation
    assert ledger.part.remittances_due == {}


def test_a_corrected_copy_that_balances_resolves_the_mismatch() -> None:
    ledger = Ledger()
    ledger.apply(*lines(10_000, 10_000, 5_500), remit(26_000, 25_500), remit(25_500, 25_500, event_id="r-fix"))
    [resolved] = ledger.resolved("remittance_total_mismatch")
    assert resolved.resolving_event_ids == ("r-fix",)
    assert ledger.open(account_id="payer:AG-004") == []
    assert ledger.unapplied["AG-004"] == 25_500  # the excess is no longer held


def test_a_changed_imbalance_updates_the_open_mismatch() -> None:
    ledger = Ledger()
    ledger.apply(*lines(10_000, 10_000, 5_500), remit(26_000, 25_500))
    outs = ledger.apply(remit(27_000, 25_500, event_id="r-2"))
    [changed] = outs[0].changed_discrepancies
    assert (changed.expected_cents, changed.actual_cents) == (25_500, 27_000)
    [event] = outs[0].emitted
    assert isinstance(event, DiscrepancyAmountChanged)
    assert (event.previous_actual_cents, event.actual_cents, event.changing_event_ids) == (26_000, 27_000, ("r-2",))


def test_advice_lines_post_no_cash_until_the_payment_with_their_trace_funds_them() -> None:
    ledger = Ledger()
    billed(ledger, 10_000, 10_000, 5_500)
    ledger.apply(*lines(10_000, 10_000, 5_500, advice=True), remit(25_500, 25_500, advice_only=True, method="none"))
    assert [ledger.account(f"M{i}").months[JAN.isoformat()].paid_cents for i in (1, 2, 3)] == [0, 0, 0]
    assert ledger.unapplied.get("AG-004", 0) == 0
    money = pay(26_000, month=None, account="payer:AG-004", payer="AG-004", trace="TRN-1", method="ach",
                event_id="ach-1", payment_id="ACH-1")
    ledger.apply(money)
    assert [ledger.account(f"M{i}").months[JAN.isoformat()].paid_cents for i in (1, 2, 3)] == [10_000, 10_000, 5_500]
    assert ledger.unapplied["AG-004"] == 500  # what the money brought beyond the lines
    [opened] = ledger.opened("remittance_total_mismatch")
    assert (opened.expected_cents, opened.actual_cents) == (25_500, 26_000)


def test_advice_whose_money_never_comes_is_a_mismatch_after_its_payment_date() -> None:
    ledger = Ledger()
    billed(ledger, 10_000)
    ledger.apply(*lines(10_000, advice=True), remit(10_000, 10_000, advice_only=True, method="none", line_count=1))
    ledger.apply(day(date(2026, 1, 5)))
    [opened] = ledger.opened("remittance_total_mismatch")
    assert (opened.expected_cents, opened.actual_cents) == (10_000, 0)
    assert "no payment with its trace has arrived" in opened.explanation


def test_a_remittance_on_another_account_than_its_payer_is_rejected() -> None:
    ledger = Ledger()
    with pytest.raises(Rejected) as info:
        ledger.apply(remit(1, 1, account_id="payer:SOMEONE"))
    assert info.value.field == "account_id"


def test_remittances_belong_on_the_payments_topic_and_round_trip() -> None:
    assert "remittance_received" in topic_types(TOPICS)[TOPICS.payments]
    assert "remittance_line_posted" in topic_types(TOPICS)[TOPICS.payments]
    event = remit(26_000, 25_500)
    assert decode_input(encode(event)) == event


def test_the_batch_processor_posts_line_reports_and_records_the_mismatch() -> None:
    proc, store = make()
    feed = Feed()
    first = run(proc, store, feed.records(*lines(10_000, 10_000, 5_500)))
    reports = [decode_input(r.body) for r in first.write.outbox if r.stream == PAYMENTS_STREAM]
    assert sorted(type(e).__name__ for e in reports) == ["RemittanceLinePosted"] * 3
    result = run(proc, store, [*feed.records(*reports), feed.record(remit(26_000, 25_500))])
    [row] = result.write.discrepancies_opened
    assert (row.kind, row.expected_cents, row.actual_cents, row.actor) == (
        "remittance_total_mismatch", 25_500, 26_000, "payroll")
    again = run(proc, store, [feed.record(remit(26_000, 25_500))])
    assert again.duplicates == 1 and again.write.discrepancies_opened == []


def test_only_the_books_still_waiting_are_indexed_so_a_payer_with_many_remittances_walks_only_those() -> None:
    """A payer account gains a book with every remittance; the rules looking for due books walk only
    those not judged yet (AccountState.waiting_books), which must always be what a full scan finds."""
    ledger = Ledger()
    for n in range(1, 6):  # five remittances, each balanced and judged as its last line posts
        r = f"TRN-{n}"
        ledger.apply(*[pay(100, account=f"M{i}", payer="AG-004", remittance=r, trace=r, event_id=f"{r}-line-{i}",
                           payment_id=f"{r}-{i}") for i in (1, 2, 3)],
                     remit(300, 300, event_id=f"r-{n}", remittance=r))
    ledger.apply(*lines(10_000, 10_000, remittance="TRN-6"), remit(25_500, 25_500, event_id="r-6", remittance="TRN-6"))
    payer = ledger.account("payer:AG-004")
    assert len(payer.remittances) == 6 and payer.waiting_books == {"TRN-6"}  # one line still to come
    assert ledger.part.remittances_due == {"payer:AG-004": date(2026, 1, 4)}
    ledger.apply(day(date(2026, 1, 5)))
    [opened] = ledger.opened("remittance_total_mismatch")
    assert opened.explanation.startswith("remittance TRN-6")
    assert ledger.account("payer:AG-004").waiting_books == set() and ledger.part.remittances_due == {}
