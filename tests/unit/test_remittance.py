"""RemittanceReceived: the payer's account records a remittance and opens remittance_total_mismatch."""

from __future__ import annotations

from typing import Any

import pytest

from events.codec import decode_input, encode
from events.topics import topic_types
from events.types import DiscrepancyAmountChanged, RemittanceReceived
from processor.rules.base import Rejected
from tests.unit.builders import JAN, T0, TOPICS, Feed, Ledger, make, run


def remit(total: int, lines: int, *, event_id: str = "r-1", remittance: str = "TRN-1", payer: str = "AG-004",
          **changes: Any) -> RemittanceReceived:
    values: dict[str, Any] = dict(
        event_id=event_id, account_id=f"payer:{payer}", effective_on=JAN, occurred_at=T0, source="x12-820",
        remittance_id=remittance, payer_id=payer, payee_id="PE-1", method="ach", payment_date=JAN,
        trace_number=remittance, total_cents=total, lines_total_cents=lines, line_count=3,
    )
    values.update(changes)
    return RemittanceReceived(**values)


def test_a_balanced_remittance_opens_nothing() -> None:
    ledger = Ledger()
    ledger.apply(remit(25_500, 25_500))
    assert ledger.emitted == []
    assert ledger.account("payer:AG-004").events_applied == 1


def test_an_imbalanced_remittance_opens_a_mismatch_for_payroll_with_both_amounts() -> None:
    ledger = Ledger()
    ledger.apply(remit(26_000, 25_500))
    [opened] = ledger.opened("remittance_total_mismatch")
    assert (opened.expected_cents, opened.actual_cents) == (25_500, 26_000)
    assert opened.actor == "payroll" and opened.payer_id == "AG-004"
    assert opened.account_id == "payer:AG-004" and opened.coverage_month is None
    assert opened.cause_event_ids == ("r-1",)
    assert "$255.00" in opened.explanation and "$260.00" in opened.explanation
    assert ledger.one_open("remittance_total_mismatch", "payer:AG-004").opened_by == "r-1"


def test_the_same_remittance_again_under_another_id_does_not_open_a_second_mismatch() -> None:
    ledger = Ledger()
    ledger.apply(remit(26_000, 25_500), remit(26_000, 25_500, event_id="r-2"))
    assert len(ledger.opened()) == 1


def test_a_corrected_copy_that_balances_resolves_the_mismatch() -> None:
    ledger = Ledger()
    ledger.apply(remit(26_000, 25_500), remit(25_500, 25_500, event_id="r-fix"))
    [resolved] = ledger.resolved("remittance_total_mismatch")
    assert resolved.resolving_event_ids == ("r-fix",)
    assert ledger.open(account_id="payer:AG-004") == []


def test_a_changed_imbalance_updates_the_open_mismatch() -> None:
    ledger = Ledger()
    outs = ledger.apply(remit(26_000, 25_500), remit(27_000, 25_500, event_id="r-2"))
    [changed] = outs[1].changed_discrepancies
    assert (changed.expected_cents, changed.actual_cents) == (25_500, 27_000)
    [event] = outs[1].emitted
    assert isinstance(event, DiscrepancyAmountChanged)
    assert (event.previous_actual_cents, event.actual_cents, event.changing_event_ids) == (26_000, 27_000, ("r-2",))


def test_a_remittance_on_another_account_than_its_payer_is_rejected() -> None:
    ledger = Ledger()
    with pytest.raises(Rejected) as info:
        ledger.apply(remit(1, 1, account_id="payer:SOMEONE"))
    assert info.value.field == "account_id"


def test_remittances_belong_on_the_payments_topic_and_round_trip() -> None:
    assert "remittance_received" in topic_types(TOPICS)[TOPICS.payments]
    event = remit(26_000, 25_500)
    assert decode_input(encode(event)) == event


def test_the_batch_processor_archives_a_remittance_and_records_its_discrepancy() -> None:
    proc, store = make()
    feed = Feed()
    event = remit(26_000, 25_500)
    result = run(proc, store, [feed.record(event, topic=TOPICS.payments)])
    assert (result.received, result.applied) == (1, 1)
    [row] = result.write.discrepancies_opened
    assert (row.kind, row.expected_cents, row.actual_cents, row.actor) == (
        "remittance_total_mismatch", 25_500, 26_000, "payroll")
    again = run(proc, store, [feed.record(event, topic=TOPICS.payments)])
    assert again.duplicates == 1 and again.write.discrepancies_opened == []
