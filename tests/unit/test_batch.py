"""BatchProcessor + MemoryStore: dedupe, dead letters, counts, positions, redelivery, broadcast copies."""

from __future__ import annotations

from datetime import date

import msgspec

from events.codec import encode
from processor.batch import BatchResult
from projections.memory import MemoryStore
from tests.unit.builders import (
    ACCOUNT,
    AGENCY,
    HOME,
    JAN,
    LOG,
    PARTITIONS,
    TOPICS,
    UMP_EMP,
    Feed,
    adjust,
    bill,
    claim,
    day,
    elect,
    enroll,
    make,
    pay,
    rate,
    reverse,
    run,
)


def assert_counts_add_up(result: BatchResult, store: MemoryStore) -> None:
    assert result.received == result.applied + result.duplicates + len(result.write.dead_letters)
    c = store.counts()
    assert c.received == c.applied + c.duplicates + c.dead_lettered


def the_dead(result: BatchResult):
    [dead] = result.write.dead_letters
    return dead


# -- duplicates -----------------------------------------------------------------------------------


def test_an_exact_duplicate_in_the_same_batch_is_counted_as_duplicate_and_archived_once() -> None:
    proc, store = make()
    feed = Feed()
    p = pay(UMP_EMP, event_id="pay-1")
    result = run(proc, store, [feed.record(p), feed.record(p)])
    assert (result.received, result.applied, result.duplicates) == (2, 1, 1)
    assert result.write.dead_letters == []
    assert [r.dedupe_key for r in store.archive] == ["pay-1"]
    assert_counts_add_up(result, store)


def test_an_exact_duplicate_in_a_later_batch_is_counted_as_duplicate_and_not_archived_again() -> None:
    proc, store = make()
    feed = Feed()
    p = pay(UMP_EMP, event_id="pay-1")
    run(proc, store, feed.records(enroll(), bill(UMP_EMP), p))
    result = run(proc, store, [feed.record(p)])
    assert (result.received, result.applied, result.duplicates) == (1, 0, 1)
    assert store.archive_count() == 3
    assert store.balance(ACCOUNT).months[0].paid_cents == 78_412  # the resend is not paid twice
    assert store.counts().duplicates == 1
    assert_counts_add_up(result, store)


def test_the_same_event_id_with_a_different_body_is_dead_lettered_as_a_conflicting_duplicate() -> None:
    proc, store = make()
    feed = Feed()
    run(proc, store, [feed.record(pay(UMP_EMP, event_id="pay-1", payment_id="P1"))])
    result = run(proc, store, [feed.record(pay(UMP_EMP - 1, event_id="pay-1", payment_id="P1"))])
    dead = the_dead(result)
    assert "conflicting duplicate" in dead.reason and "pay-1" in dead.reason
    assert (dead.field, dead.event_id) == ("event_id", "pay-1")
    assert (result.applied, result.duplicates) == (0, 0)
    assert store.archive_count() == 1
    assert_counts_add_up(result, store)


def test_a_resend_of_an_event_archived_before_a_defaulted_field_existed_is_a_duplicate_not_a_conflict() -> None:
    """An upgrade adds a field with a default: the body archived before it lacks the field, so its hash
    differs from the resend's, yet decoded (the field at its default) it is the same event."""
    import json

    from events.codec import body_hash

    proc, store = make()
    feed = Feed()
    p = pay(UMP_EMP, event_id="pay-1")
    run(proc, store, feed.records(enroll(), bill(UMP_EMP), p))
    # the archive as an older version wrote it: without a field that now has a default (None here)
    old = json.loads(store.archive[-1].body)
    defaulted = [k for k, v in old.items() if v is None]
    assert defaulted
    for k in defaulted:
        del old[k]
    old_body = json.dumps(old, separators=(",", ":")).encode()
    store.archive[-1] = msgspec.structs.replace(store.archive[-1], body=old_body, body_hash=body_hash(old_body))
    store._dedupe["pay-1"] = body_hash(old_body)
    result = run(proc, store, [feed.record(p)])
    assert (result.received, result.applied, result.duplicates, result.write.dead_letters) == (1, 0, 1, [])
    assert store.balance(ACCOUNT).months[0].paid_cents == 78_412  # not paid twice
    # a real conflict still is one
    result = run(proc, store, [feed.record(pay(UMP_EMP - 1, event_id="pay-1"))])
    assert "conflicting duplicate" in the_dead(result).reason
    assert_counts_add_up(result, store)


def test_a_conflicting_duplicate_within_one_batch_keeps_the_first_body() -> None:
    proc, store = make()
    feed = Feed()
    first = pay(UMP_EMP, event_id="pay-1", payment_id="P1")
    result = run(proc, store, [feed.record(first), feed.record(pay(5, event_id="pay-1", payment_id="P1"))])
    assert "conflicting duplicate" in the_dead(result).reason
    assert [r.body for r in store.archive] == [encode(first)]


# -- dead letters ---------------------------------------------------------------------------------


def test_an_event_on_the_wrong_topic_is_dead_lettered_naming_type_and_topic() -> None:
    proc, store = make()
    feed = Feed()
    result = run(proc, store, [feed.record(pay(100), topic=TOPICS.billing)])
    dead = the_dead(result)
    assert dead.reason == f"payment_received does not belong on topic {TOPICS.billing}"
    assert dead.field == "type"
    assert store.archive_count() == 0
    assert_counts_add_up(result, store)


def test_a_record_whose_key_is_not_the_account_id_is_dead_lettered() -> None:
    proc, store = make()
    feed = Feed()
    result = run(proc, store, [feed.record(pay(100), key=b"SOMEONE-ELSE", partition=HOME)])
    dead = the_dead(result)
    assert "is not the account_id" in dead.reason and ACCOUNT in dead.reason
    assert dead.field == "account_id"
    assert dead.key == b"SOMEONE-ELSE"


def test_a_record_on_the_wrong_partition_is_dead_lettered_naming_the_right_one_and_the_partitioner() -> None:
    proc, store = make()
    feed = Feed()
    wrong = (HOME + 1) % PARTITIONS
    result = run(proc, store, [feed.record(pay(100), partition=wrong)])
    dead = the_dead(result)
    assert dead.reason.startswith(f"account {ACCOUNT} belongs on partition {HOME}, not {wrong} ")
    assert "murmur2" in dead.reason and "partitioner=murmur2_random" in dead.reason
    assert dead.field == "account_id"


def test_undecodable_bytes_are_dead_lettered_with_the_raw_value_kept() -> None:
    proc, store = make()
    feed = Feed()
    result = run(proc, store, [feed.raw(TOPICS.payments, HOME, ACCOUNT.encode(), b"{not json")])
    dead = the_dead(result)
    assert dead.reason.startswith("undecodable: not JSON")
    assert dead.raw == b"{not json" and dead.event_id is None
    assert_counts_add_up(result, store)


def test_an_invalid_event_is_dead_lettered_naming_its_field() -> None:
    proc, store = make()
    feed = Feed()
    raw = encode(pay(100)).replace(b'"amount_cents":100', b'"amount_cents":0')
    result = run(proc, store, [feed.raw(TOPICS.payments, HOME, ACCOUNT.encode(), raw)])
    dead = the_dead(result)
    assert dead.reason.startswith("undecodable: ") and dead.field == "amount_cents"


def test_a_record_without_a_value_is_dead_lettered() -> None:
    proc, store = make()
    feed = Feed()
    result = run(proc, store, [feed.raw(TOPICS.payments, HOME, ACCOUNT.encode(), None)])
    assert the_dead(result).reason == "empty record (no value)"
    assert the_dead(result).raw == b""


def test_an_event_the_fold_rejects_is_dead_lettered_with_its_reason_and_not_archived() -> None:
    proc, store = make()
    feed = Feed()
    result = run(proc, store, [feed.record(reverse("P-unknown", event_id="rev-1"))])
    dead = the_dead(result)
    assert (dead.event_id, dead.field) == ("rev-1", "payment_id")
    assert "P-unknown" in dead.reason
    assert store.archive_count() == 0 and store.find_events(["rev-1"]) == {}


def test_a_rejected_event_sent_again_in_a_later_batch_is_folded_again() -> None:
    proc, store = make()
    feed = Feed()
    rev = reverse("P1", event_id="rev-1")
    run(proc, store, [feed.record(rev)])  # the payment has not arrived yet: rejected
    run(proc, store, feed.records(enroll(), bill(UMP_EMP), pay(UMP_EMP, payment_id="P1")))
    result = run(proc, store, [feed.record(rev)])
    assert (result.applied, result.duplicates) == (1, 0)
    assert store.balance(ACCOUNT).months[0].paid_cents == 0


def test_a_rejected_event_resent_later_in_the_same_batch_is_folded_again() -> None:
    proc, store = make()
    feed = Feed()
    rev = reverse("P1", event_id="rev-1")
    records = [feed.record(rev), *feed.records(enroll(), bill(UMP_EMP), pay(UMP_EMP, payment_id="P1")),
               feed.record(rev)]
    result = run(proc, store, records)
    assert result.duplicates == 0
    assert store.balance(ACCOUNT).months[0].paid_cents == 0


# -- counts and positions -------------------------------------------------------------------------


def test_counts_add_up_and_positions_advance_past_every_consumed_offset() -> None:
    proc, store = make()
    feed = Feed()
    p = pay(70_000, event_id="pay-1", payment_id="P1")
    records = [
        *feed.records(rate(UMP_EMP), enroll(), bill(UMP_EMP, event_id="bill-1")),
        feed.record(p),
        feed.record(p),                                                   # duplicate
        feed.record(pay(1, event_id="pay-1", payment_id="P1")),           # conflicting duplicate
        feed.record(pay(100), topic=TOPICS.billing),                      # wrong topic
        feed.raw(TOPICS.payments, HOME, ACCOUNT.encode(), b"garbage"),    # undecodable
        feed.record(reverse("P-unknown")),                                # rejected by the fold
        feed.record(adjust(-100, event_id="adj-1")),
    ]
    result = run(proc, store, records)
    dead = result.write.dead_letters
    assert (result.received, result.applied, result.duplicates, len(dead)) == (13, 8, 1, 4)
    assert_counts_add_up(result, store)
    c = store.counts()
    assert (c.received, c.applied, c.duplicates, c.dead_lettered) == (13, 8, 1, 4)
    assert store.positions(LOG) == {tp: n for tp, n in feed.next.items()}
    for adv in result.write.positions:
        assert adv.expected_next is None
        assert adv.next_offset == feed.next[(adv.topic, adv.partition)]
    # per topic-partition counts add up to the offsets consumed there (one batch, all from offset 0)
    for adv in result.write.positions:
        assert adv.applied + adv.duplicates + adv.dead_lettered == adv.next_offset
    # the discrepancy made it to the store, to the cent
    [row] = store.discrepancies(kind="underpaid")
    assert (row.expected_cents, row.actual_cents, row.status) == (78_312, 70_000, "open")


def test_a_partition_with_only_dead_letters_still_advances_its_position() -> None:
    proc, store = make()
    feed = Feed()
    run(proc, store, [feed.raw(TOPICS.payments, 3, b"k", b"x"), feed.raw(TOPICS.payments, 3, b"k", b"y")])
    assert store.positions(LOG) == {(TOPICS.payments, 3): 2}


def test_positions_continue_from_the_stored_position_in_the_next_batch() -> None:
    proc, store = make()
    feed = Feed()
    run(proc, store, feed.records(enroll()))
    result = run(proc, store, feed.records(bill(UMP_EMP)))
    [adv] = result.write.positions
    assert (adv.topic, adv.expected_next, adv.next_offset) == (TOPICS.billing, None, 1)
    result = run(proc, store, feed.records(adjust(-5)))
    [adv] = result.write.positions
    assert (adv.expected_next, adv.next_offset) == (1, 2)


def test_records_below_the_stored_position_are_skipped_and_not_counted_again() -> None:
    proc, store = make()
    feed = Feed()
    records = feed.records(rate(UMP_EMP), enroll(), bill(UMP_EMP), pay(70_000))
    run(proc, store, records)
    before = (store.counts(), store.archive_count(), store.positions(LOG), store.discrepancies())
    result = run(proc, store, records)  # redelivered after a rebalance
    assert result.skipped_already_applied == len(records)
    assert (result.received, result.applied, result.duplicates) == (0, 0, 0)
    assert result.write.positions == [] and result.write.archive == []
    assert (store.counts(), store.archive_count(), store.positions(LOG), store.discrepancies()) == before


def test_a_restarted_processor_skips_what_the_store_already_has() -> None:
    proc, store = make()
    feed = Feed()
    old = feed.records(enroll(), bill(UMP_EMP))
    run(proc, store, old)
    restarted, _ = make(store)
    new = feed.records(pay(UMP_EMP))
    result = run(restarted, store, [*old, *new])
    assert (result.skipped_already_applied, result.received, result.applied) == (2, 1, 1)
    assert store.balance(ACCOUNT).months[0].balance_cents == 0


# -- broadcast events -----------------------------------------------------------------------------


def test_a_broadcast_event_is_archived_once_per_partition_under_event_id_at_partition() -> None:
    proc, store = make()
    feed = Feed()
    events = (rate(UMP_EMP, event_id="rate-1"), day(date(2026, 1, 31), event_id="d-1"))
    result = run(proc, store, feed.records(*events))
    assert result.applied == 2 * PARTITIONS
    keys = sorted(r.dedupe_key for r in store.archive)
    assert keys == sorted(f"{e}@p{p}" for e in ("rate-1", "d-1") for p in range(PARTITIONS))
    assert {r.partition for r in store.archive if r.event_id == "rate-1"} == set(range(PARTITIONS))
    assert {r.account_id for r in store.archive} == {"*"}


def test_a_broadcast_event_redelivered_to_a_partition_is_a_duplicate_there_only() -> None:
    proc, store = make()
    feed = Feed()
    r = rate(UMP_EMP, event_id="rate-1")
    run(proc, store, feed.records(r))
    result = run(proc, store, [feed.raw(TOPICS.rates, 2, None, encode(r))])
    assert (result.applied, result.duplicates) == (0, 1)
    assert store.archive_count() == PARTITIONS


def test_a_broadcast_event_with_a_changed_body_on_one_partition_is_a_conflicting_duplicate() -> None:
    proc, store = make()
    feed = Feed()
    run(proc, store, feed.records(rate(UMP_EMP, event_id="rate-1")))
    result = run(proc, store, [feed.raw(TOPICS.rates, 1, None, encode(rate(1, event_id="rate-1")))])
    dead = the_dead(result)
    assert "conflicting duplicate" in dead.reason and "rate-1" in dead.reason


def test_a_day_closed_on_a_cold_processor_finds_unpaid_accounts_from_the_store() -> None:
    proc, store = make()
    feed = Feed()
    run(proc, store, feed.records(enroll(), bill(UMP_EMP, event_id="bill-1")))
    cold, _ = make(store)  # restarted worker: empty cache
    result = run(cold, store, feed.records(day(date(2026, 2, 1), event_id="day-1")))
    [row] = store.discrepancies(kind="missing_payment")
    assert (row.account_id, row.coverage_month) == (ACCOUNT, JAN)
    assert (row.expected_cents, row.actual_cents) == (78_412, 0)
    assert row.cause_event_ids == ("bill-1", "day-1")
    assert [o.event_id for o in result.write.outbox] == [f"{row.discrepancy_id}:opened"]


def test_unmatched_cash_reaches_the_payer_and_is_released_when_applied() -> None:
    proc, store = make()
    feed = Feed()
    run(proc, store, feed.records(enroll(), pay(UMP_EMP, month=JAN)))
    assert store.payer_unapplied() == {AGENCY: 78_412}
    run(proc, store, feed.records(bill(UMP_EMP)))
    assert store.payer_unapplied() == {}
    assert [d.status for d in store.discrepancies(kind="unmatched_payment")] == ["resolved"]


def test_feed_helpers_route_events_like_the_publisher() -> None:
    feed = Feed()
    rec = feed.record(pay(1))
    assert (rec.topic, rec.partition, rec.key) == (TOPICS.payments, HOME, ACCOUNT.encode())


def _rate_corrected_after_billing(restart: bool) -> list[tuple[str, int, int]]:
    proc, store = make()
    feed = Feed()
    run(proc, store, feed.records(rate(UMP_EMP, event_id="r1"), enroll(), bill(UMP_EMP, event_id="b1"),
                                  day(date(2026, 2, 1), event_id="d1")))  # Jan unpaid: missing_payment
    if restart:
        proc, _ = make(store)  # the worker that gets the correction has nothing cached
    run(proc, store, feed.records(rate(79_000, event_id="r2")))  # the Jan rate is corrected
    run(proc, store, feed.records(day(date(2026, 2, 2), event_id="d2")))
    return sorted((d.kind, d.expected_cents, d.actual_cents) for d in store.discrepancies())


def test_a_rate_correction_reaching_a_billed_month_is_a_retroactive_change() -> None:
    assert _rate_corrected_after_billing(restart=False) == [
        ("missing_payment", 78_412, 0), ("retroactive_change", 79_000, 78_412),
    ]


def test_a_worker_with_nothing_cached_finds_the_months_a_rate_correction_reaches() -> None:
    assert _rate_corrected_after_billing(restart=True) == _rate_corrected_after_billing(restart=False)


def _fsa_year_closed_by_a_day(restart: bool) -> list[tuple[int, str, int, int, bool]]:
    proc, store = make()
    feed = Feed()
    run(proc, store, feed.records(elect(100_000, year=2026), claim(20_000, service=date(2026, 5, 1))))
    if restart:
        proc, _ = make(store)  # the worker that gets the business day has nothing cached
    run(proc, store, feed.records(day(date(2027, 4, 1), event_id="d-runout-over")))
    return [(r.plan_year, r.account_type, r.carryover_in_cents, r.carryover_out_cents, r.closed)
            for r in store.fsa_accounts(ACCOUNT)]


def test_the_day_after_the_run_out_closes_an_fsa_year_on_warm_and_cold_workers_alike() -> None:
    # $800.00 unused: $680.00 carries into 2027 without any 2027 event
    assert _fsa_year_closed_by_a_day(restart=False) == [
        (2026, "health", 0, 68_000, True), (2027, "health", 68_000, 0, False),
    ]
    assert _fsa_year_closed_by_a_day(restart=True) == _fsa_year_closed_by_a_day(restart=False)


def test_an_offset_out_of_range_on_a_never_applied_partition_says_retention_deleted_history() -> None:
    """A new ledger whose input topics lost their beginning to retention must stop, not start halfway."""
    from aiokafka import TopicPartition
    from aiokafka.errors import OffsetOutOfRangeError

    from processor.runtime import ProcessorLoop
    from processor.settings import Settings
    from projections.memory import MemoryStore

    loop = ProcessorLoop(Settings(kafka_bootstrap_servers="x:1", database_url="x"), "x:1", MemoryStore(),
                         log_id=LOG)
    fresh = loop._out_of_range(OffsetOutOfRangeError({TopicPartition(TOPICS.billing, 2): 0}))
    assert "retention deleted history" in str(fresh) and "retention.ms=-1" in str(fresh)
    assert f"{TOPICS.billing}[2]" in str(fresh)

    proc, store = make()
    run(proc, store, [Feed().record(bill(78_412))])
    known = ProcessorLoop(Settings(kafka_bootstrap_servers="x:1", database_url="x"), "x:1", store, log_id=LOG)
    home = TopicPartition(TOPICS.billing, HOME)
    truncated = known._out_of_range(OffsetOutOfRangeError({home: 5}))
    assert "ends before a position this ledger already applied" in str(truncated)


def test_the_remittance_line_reports_the_ledger_posts_are_delivered_once_they_come_back() -> None:
    """Issue 12: an outbox row on the payments topic is delivered only when the processor reads it back;
    a remittance line's report (and any payment the ledger posts) counts, not only cash applications."""
    from events.codec import decode_input
    from events.types import RemittanceLinePosted
    from projections.model import PAYMENTS_STREAM

    proc, store = make()
    feed = Feed()
    run(proc, store, feed.records(rate(UMP_EMP), enroll(), bill(UMP_EMP),
                                  pay(UMP_EMP, remittance="RM-1", trace="TR-1")))
    posted = [row for _, row in store.outbox_undelivered(100)]
    assert posted and all(row.stream == PAYMENTS_STREAM for row in posted)
    reports = [decode_input(row.body) for row in posted]
    assert any(isinstance(e, RemittanceLinePosted) for e in reports)

    # the relay published them; the broker hands them back on the payments topic
    result = run(proc, store, [feed.record(e, key=row.key.encode()) for e, row in zip(reports, posted, strict=True)])
    assert sorted(result.write.echoed) == sorted(row.event_id for row in posted)
    assert store.outbox_undelivered(100) == []
    assert_counts_add_up(result, store)


def _cycle(month: date, event_id: str) -> object:
    from events.types import BROADCAST_ACCOUNT, BillingCycleClosed
    from tests.unit.builders import T0

    return BillingCycleClosed(event_id=event_id, account_id=BROADCAST_ACCOUNT, effective_on=month, occurred_at=T0,
                              cycle_month=month)


def _unbilled_after_a_cycle(restart: bool) -> list[tuple[str, str, int]]:
    proc, store = make()
    feed = Feed()
    billed, unbilled = "M-BILLED", "M-UNBILLED"
    run(proc, store, feed.records(rate(UMP_EMP), enroll(account=billed), enroll(account=unbilled),
                                  bill(UMP_EMP, account=billed)))
    if restart:
        proc, _ = make(store)  # the worker that closes the cycle has nothing cached
    run(proc, store, feed.records(_cycle(JAN, "cycle-jan")))  # type: ignore[arg-type]
    return sorted((d.kind, d.account_id, d.expected_cents) for d in store.discrepancies())


def test_a_closed_billing_cycle_judges_the_covered_unbilled_month_on_warm_and_cold_workers_alike() -> None:
    warm = _unbilled_after_a_cycle(restart=False)
    assert [(kind, account) for kind, account, _ in warm if account == "M-UNBILLED"], warm
    assert all(account != "M-BILLED" for _, account, _ in warm), warm
    assert _unbilled_after_a_cycle(restart=True) == warm


def test_a_business_day_reaches_only_the_accounts_it_may_change_not_every_cached_one() -> None:
    """Issue 16: the cost of a day does not grow with the accounts a worker holds."""
    from processor.rules.fold import fold_event

    reached: list[list[str]] = []

    def counting(event, part, plan, account_of, reachable):  # type: ignore[no-untyped-def]
        if type(event).BROADCAST:
            reached.append([a.account_id for a in reachable()])
        return fold_event(event, part, plan, account_of, reachable)

    proc, store = make(fold=counting)
    feed = Feed()
    paid = [f"M-PAID-{n:03d}" for n in range(200)]
    events: list[object] = [rate(UMP_EMP)]
    for account in paid:
        events += [enroll(account=account), bill(UMP_EMP, account=account), pay(UMP_EMP, account=account)]
    events += [enroll(account="M-OWES"), bill(UMP_EMP, account="M-OWES")]
    run(proc, store, feed.records(*events))  # type: ignore[arg-type]
    reached.clear()  # the setup's rate publication; what follows is the day's
    run(proc, store, feed.records(day(date(2026, 2, 15), event_id="day-feb-15")))
    assert len(proc._accounts) > 200  # every account is cached ...
    assert sorted({a for r in reached for a in r}) == ["M-OWES"]  # ... and the day reaches the one that owes
    assert [d.account_id for d in store.discrepancies(kind="missing_payment")] == ["M-OWES"]
