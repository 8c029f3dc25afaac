"""The store contract: the same tests against the in-memory store and the PostgreSQL store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import msgspec
import psycopg
import pytest

from events.codec import body_hash, encode
from events.types import EnrollmentChanged, Event, PaymentReceived, PremiumBilled
from processor.state import (
    PAYMENT_APPLIED,
    PAYMENT_HELD,
    AccountState,
    BillLine,
    CoverageSegment,
    FsaState,
    FsaYear,
    MonthState,
    OpenDiscrepancy,
    PartitionState,
    PaymentLine,
    RateEntry,
    RemittanceBook,
    decode_account,
    encode_state,
    month_key,
)
from projections.memory import MemoryStore
from projections.model import (
    CLAIMS_STREAM,
    DISCREPANCIES_STREAM,
    ArchiveRow,
    BatchWrite,
    DeadLetterRow,
    DiscrepancyClose,
    DiscrepancyRow,
    LedgerStore,
    OutboxRow,
    PositionAdvance,
    PositionConflict,
)

LOG = "log-1"
BILLING = "ledger.billing"
JAN = date(2026, 1, 1)
FEB = date(2026, 2, 1)
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[LedgerStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    from projections.postgres import PostgresStore

    pg = PostgresStore(request.getfixturevalue("pg_dsn"))
    try:
        pg.migrate()
        yield pg
    finally:
        pg.close()


# ---------------------------------------------------------------------------------------------
# Builders: real events, canonical bodies, fold state built by hand


def enrolled(account_id: str, n: int = 1) -> EnrollmentChanged:
    return EnrollmentChanged(
        event_id=f"{account_id}-enr-{n}", account_id=account_id, effective_on=JAN, occurred_at=T0,
        source="hr", member_id=f"{account_id}-m{n}", plan="PPO", coverage_line="health", tier="EE",
        action="add", benefit_begin=JAN, agency_id="AG1",
    )


def billed(account_id: str, month: date = JAN, cents: int = 45_000) -> PremiumBilled:
    return PremiumBilled(
        event_id=f"{account_id}-bill-{month:%Y%m}", account_id=account_id, effective_on=month,
        occurred_at=T0, source="billing", bill_id=f"B-{account_id}-{month:%Y%m}", coverage_month=month,
        plan="PPO", tier="EE", amount_cents=cents, due_on=month + timedelta(days=30), agency_id="AG1",
    )


def paid(account_id: str, month: date = JAN, cents: int = 45_000, payer: str = "AG1") -> PaymentReceived:
    return PaymentReceived(
        event_id=f"{account_id}-pay-{month:%Y%m}", account_id=account_id, effective_on=month,
        occurred_at=T0, source="payroll", payment_id=f"P-{account_id}-{month:%Y%m}", coverage_month=month,
        amount_cents=cents, method="payroll", payer_id=payer,
    )


def archive_row(
    event: Event, offset: int, *, partition: int = 0, topic: str = BILLING, dedupe_key: str | None = None,
    recorded_at: datetime = T0,
) -> ArchiveRow:
    body = encode(event)
    return ArchiveRow(
        log_id=LOG, topic=topic, partition=partition, offset=offset,
        dedupe_key=dedupe_key or event.event_id, event_id=event.event_id,
        event_type=type(event).__struct_config__.tag,  # type: ignore[arg-type]
        account_id=event.account_id, effective_on=event.effective_on, occurred_at=event.occurred_at,
        recorded_at=recorded_at, body=body, body_hash=body_hash(body),
    )


def month_state(
    account_id: str, month: date, bill_cents: int, paid_cents: int = 0, *, payer: str = "AG1",
    held_cents: int = 0,
) -> MonthState:
    bill = billed(account_id, month, bill_cents)
    state = MonthState(
        month=month,
        bills=[BillLine(bill_id=bill.bill_id, plan="PPO", tier="EE", amount_cents=bill_cents,
                        due_on=bill.due_on, agency_id="AG1", event_id=bill.event_id)] if bill_cents else [],
        expected_cents=bill_cents or None,
    )  # fmt: skip
    if paid_cents:
        pay = paid(account_id, month, paid_cents, payer)
        state.payments.append(PaymentLine(
            payment_id=pay.payment_id, amount_cents=paid_cents, payer_id=payer, method="payroll",
            trace_number=None, remittance_id=None, status=PAYMENT_APPLIED, event_id=pay.event_id,
        ))  # fmt: skip
    if held_cents:
        state.payments.append(PaymentLine(
            payment_id=f"held-{account_id}", amount_cents=held_cents, payer_id=payer, method="check",
            trace_number=None, remittance_id=None, status=PAYMENT_HELD, event_id=f"held-{account_id}",
        ))  # fmt: skip
    return state


def account(account_id: str, *months: MonthState, partition: int = 0, members: int = 1) -> AccountState:
    return AccountState(
        account_id=account_id,
        partition=partition,
        coverages=[
            CoverageSegment(
                member_id=f"{account_id}-m{n}", relationship="self" if n == 1 else "child",
                coverage_line="health", plan="PPO", tier="EE", status="active", begin=JAN, end=None,
                agency_id="AG1", event_id=f"{account_id}-enr-{n}",
            )
            for n in range(1, members + 1)
        ],
        months={month_key(m.month): m for m in months},
    )


def advance(
    expected: int | None, next_offset: int, *, partition: int = 0, applied: int = 0, duplicates: int = 0,
    dead_lettered: int = 0, topic: str = BILLING,
) -> PositionAdvance:
    return PositionAdvance(
        log_id=LOG, topic=topic, partition=partition, expected_next=expected, next_offset=next_offset,
        applied=applied, duplicates=duplicates, dead_lettered=dead_lettered,
    )


def discrepancy(
    did: str, account_id: str, kind: str = "underpaid", month: date | None = JAN, *,
    expected: int = 45_000, actual: int = 40_000,
) -> DiscrepancyRow:
    return DiscrepancyRow(
        discrepancy_id=did, kind=kind, account_id=account_id, coverage_month=month, payer_id="AG1",
        expected_cents=expected, actual_cents=actual, cause_event_ids=(f"{account_id}-pay-202601",),
        explanation=f"{kind} on {account_id}", action="notify coordinator", actor="agency_coordinator",
        status="open", opened_by=f"{account_id}-pay-202601", opened_recorded_at=T0,
    )


def first_batch() -> BatchWrite:
    """Account A1: enrolled, billed 450.00 for January and paid 450.00; three archived events."""
    events = [enrolled("A1"), billed("A1"), paid("A1")]
    a1 = account("A1", month_state("A1", JAN, 45_000, 45_000))
    return BatchWrite(
        archive=[archive_row(e, i) for i, e in enumerate(events)],
        accounts={"A1": a1},
        dirty_months={"A1": {month_key(JAN)}},
        coverage_changed={"A1"},
        partitions={0: PartitionState(partition=0, business_date=date(2026, 1, 4))},
        positions=[advance(None, 3, applied=3)],
    )


def snapshot(store: LedgerStore) -> tuple[object, ...]:
    """Everything observable through the contract, for 'nothing was written' checks."""
    return (
        store.positions(LOG), store.archive_count(), store.summary(), store.balance("A1"),
        store.balance("A2"), store.discrepancies(), store.outbox_pending(100), store.dead_letters(),
        store.payer_unapplied(), store.find_events(["A1-enr-1", "A2-bill-202601", "X"]),
    )


# ---------------------------------------------------------------------------------------------
# Contract


def test_empty_store_reports_nothing(store: LedgerStore) -> None:
    assert store.positions(LOG) == {}
    assert store.balance("A1") is None
    assert store.archive_count() == 0
    assert store.due_accounts(0, date(2030, 1, 1)) == []
    assert store.load_accounts(["A1"]) == {}
    assert store.load_partitions([0]) == {}
    s = store.summary()
    assert (s.members, s.accounts, s.coverage_months, s.billed_cents, s.outstanding_cents) == (0, 0, 0, 0, 0)
    assert s.counts.received == 0
    assert s.discrepancies_opened_by_kind == {} and s.discrepancies_open_by_kind == {}


def test_committed_batch_is_visible_in_balance_and_summary(store: LedgerStore) -> None:
    batch = first_batch()
    batch.archive.append(archive_row(billed("A2", JAN, 30_000), 3, partition=0))
    batch.accounts["A2"] = account("A2", month_state("A2", JAN, 30_000, 0), members=2)
    batch.dirty_months["A2"] = {month_key(JAN)}
    batch.coverage_changed.add("A2")
    batch.positions = [advance(None, 4, applied=4)]
    store.commit_batch(batch)

    assert store.positions(LOG) == {(BILLING, 0): 4}
    assert store.archive_count() == 4
    a1 = store.balance("A1")
    assert a1 is not None
    assert a1.balance_cents == 0
    assert [(m.coverage_month, m.billed_cents, m.paid_cents, m.balance_cents) for m in a1.months] == [
        (JAN, 45_000, 45_000, 0)
    ]
    assert a1.months[0].due_on == date(2026, 1, 31) and a1.months[0].partition == 0
    coverage = [(c.member_id, c.plan, c.begin_on, c.end_on) for c in a1.coverages]
    assert coverage == [("A1-m1", "PPO", JAN, None)]
    a2 = store.balance("A2")
    assert a2 is not None and a2.balance_cents == 30_000
    assert [c.member_id for c in a2.coverages] == ["A2-m1", "A2-m2"]

    s = store.summary()
    assert (s.members, s.accounts, s.coverage_months) == (3, 2, 2)
    assert (s.billed_cents, s.adjusted_cents, s.paid_cents) == (75_000, 0, 45_000)
    assert (s.outstanding_cents, s.credits_cents, s.unapplied_cents) == (30_000, 0, 0)
    assert s.counts.applied == 4 and s.counts.received == 4


def test_only_dirty_months_and_changed_coverage_are_rewritten(
    store: LedgerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEDGER_CHECK_MONTH_WRITES")  # January changes unmarked on purpose
    store.commit_batch(first_batch())
    a1 = account("A1", month_state("A1", JAN, 45_000, 40_000), month_state("A1", FEB, 45_000), members=2)
    store.commit_batch(BatchWrite(
        accounts={"A1": a1}, dirty_months={"A1": {month_key(FEB)}}, positions=[advance(3, 4, applied=1)],
    ))  # fmt: skip
    bal = store.balance("A1")
    assert bal is not None
    # January was not named dirty: its row keeps the earlier figures; coverage was not named changed.
    assert [(m.coverage_month, m.paid_cents) for m in bal.months] == [(JAN, 45_000), (FEB, 0)]
    assert [c.member_id for c in bal.coverages] == ["A1-m1"]
    # The state is stored the same way: the header (the coverage, the counters) whole, and of the months
    # only those named dirty. January's state is still the first batch's.
    loaded = store.load_accounts(["A1"])["A1"]
    assert loaded.coverages == a1.coverages
    assert loaded.months[month_key(FEB)] == a1.months[month_key(FEB)]
    assert loaded.months[month_key(JAN)].payments[0].amount_cents == 45_000

    store.commit_batch(BatchWrite(
        accounts={"A1": a1}, coverage_changed={"A1"}, positions=[advance(4, 5, applied=1)],
    ))  # fmt: skip
    bal = store.balance("A1")
    assert bal is not None and [c.member_id for c in bal.coverages] == ["A1-m1", "A1-m2"]


def test_a_write_whose_header_did_not_change_stores_only_its_rows_and_the_account_loads_back_whole(
    store: LedgerStore,
) -> None:
    store.commit_batch(first_batch())
    a1 = store.load_accounts(["A1"])["A1"]
    # a payment on January changes a month and nothing of the header: no header among the writes
    a1.months[month_key(JAN)].payments.append(PaymentLine(
        payment_id="P-late", amount_cents=100, payer_id="AG1", method="payroll", trace_number=None,
        remittance_id=None, status=PAYMENT_HELD, event_id="P-late",
    ))  # fmt: skip
    second = BatchWrite(accounts={"A1": a1}, dirty_months={"A1": {month_key(JAN)}}, positions=[advance(3, 4)])
    assert second.freeze().snapshots == [] and len(second.freeze().month_states) == 1
    store.commit_batch(second)
    assert encode_state(store.load_accounts(["A1"])["A1"]) == encode_state(a1)
    # a new coverage changes the header: it is written, once
    a1.coverages.append(msgspec.structs.replace(a1.coverages[0], member_id="A1-m9", relationship="child"))
    third = BatchWrite(accounts={"A1": a1}, coverage_changed={"A1"}, positions=[advance(4, 5)])
    assert [a for a, _, _ in third.freeze().snapshots] == ["A1"]
    store.commit_batch(third)
    assert encode_state(store.load_accounts(["A1"])["A1"]) == encode_state(a1)
    assert BatchWrite(accounts={"A1": a1}).freeze().snapshots == []  # the store holds it now


def test_credits_and_outstanding_are_split_by_sign(store: LedgerStore) -> None:
    a1 = account("A1", month_state("A1", JAN, 45_000, 50_000), month_state("A1", FEB, 45_000, 20_000))
    store.commit_batch(BatchWrite(
        accounts={"A1": a1}, dirty_months={"A1": {month_key(JAN), month_key(FEB)}},
        coverage_changed={"A1"}, positions=[advance(None, 1, applied=1)],
    ))  # fmt: skip
    s = store.summary()
    assert (s.outstanding_cents, s.credits_cents, s.paid_cents) == (25_000, 5_000, 70_000)


def test_position_advance_with_wrong_expected_offset_is_rejected_and_writes_nothing(
    store: LedgerStore,
) -> None:
    store.commit_batch(first_batch())
    before = snapshot(store)

    def second(*positions: PositionAdvance) -> BatchWrite:
        return BatchWrite(
            archive=[archive_row(billed("A2"), 3)],
            accounts={"A2": account("A2", month_state("A2", JAN, 30_000))},
            dirty_months={"A2": {month_key(JAN)}},
            coverage_changed={"A2"},
            discrepancies_opened=[discrepancy("d-A2", "A2")],
            outbox=[OutboxRow(event_id="d-A2:opened", key="A2", body=b"{}")],
            payer_unapplied_delta={"AG1": 500},
            positions=[advance(None, 0, partition=1), *positions],
        )

    for expected in (2, 4, None):  # behind, ahead, "never seen" while the position exists
        with pytest.raises(PositionConflict):
            store.commit_batch(second(advance(expected, 4, applied=1)))
        assert snapshot(store) == before
    # A partition never seen cannot be advanced from an expected offset.
    with pytest.raises(PositionConflict):
        store.commit_batch(second(advance(3, 4, applied=1), advance(7, 8, partition=2)))
    assert snapshot(store) == before

    store.commit_batch(second(advance(3, 4, applied=1)))  # the right expectation goes through, all of it
    assert store.positions(LOG) == {(BILLING, 0): 4, (BILLING, 1): 0}
    assert store.archive_count() == 4
    assert store.payer_unapplied() == {"AG1": 500}
    assert [d.discrepancy_id for d in store.discrepancies()] == ["d-A2"]


def test_repeated_archive_position_is_rejected_by_unique_key(store: LedgerStore) -> None:
    store.commit_batch(first_batch())
    before = snapshot(store)
    # A different event claiming an already archived (log, topic, partition, offset), even with a
    # position advance that matches.
    batch = BatchWrite(
        archive=[archive_row(billed("A2"), 2)],
        accounts={"A2": account("A2", month_state("A2", JAN, 30_000))},
        dirty_months={"A2": {month_key(JAN)}},
        positions=[advance(3, 4, applied=1)],
    )
    with pytest.raises(PositionConflict):
        store.commit_batch(batch)
    assert snapshot(store) == before
    # The same offset on another partition or topic is a different position.
    store.commit_batch(BatchWrite(
        archive=[archive_row(billed("A2"), 2, partition=1)], positions=[advance(None, 3, partition=1)],
    ))  # fmt: skip
    assert store.archive_count() == 4


def test_same_dedupe_key_twice_is_rejected(store: LedgerStore) -> None:
    store.commit_batch(first_batch())
    before = snapshot(store)
    again = BatchWrite(archive=[archive_row(billed("A1"), 3)], positions=[advance(3, 4, applied=1)])
    with pytest.raises(PositionConflict):
        store.commit_batch(again)
    assert snapshot(store) == before
    twice_in_one = BatchWrite(
        archive=[archive_row(billed("A2"), 3), archive_row(billed("A2"), 4)],
        positions=[advance(3, 5, applied=2)],
    )
    with pytest.raises(PositionConflict):
        store.commit_batch(twice_in_one)
    assert snapshot(store) == before
    # A broadcast copy on another partition has a dedupe key of its own.
    copy = archive_row(billed("A2"), 0, partition=1, dedupe_key="A2-bill-202601@p1")
    store.commit_batch(BatchWrite(archive=[copy], positions=[advance(None, 1, partition=1, applied=1)]))
    assert store.find_events(["A2-bill-202601@p1", "A2-bill-202601"]) == {"A2-bill-202601@p1": copy.body_hash}


def test_find_events_returns_body_hash_by_dedupe_key(store: LedgerStore) -> None:
    batch = first_batch()
    store.commit_batch(batch)
    found = store.find_events(["A1-enr-1", "A1-pay-202601", "nope"])
    assert found == {"A1-enr-1": batch.archive[0].body_hash, "A1-pay-202601": batch.archive[2].body_hash}
    assert store.find_events([]) == {}


def test_archived_body_returns_the_body_under_a_dedupe_key_or_none(store: LedgerStore) -> None:
    batch = first_batch()
    store.commit_batch(batch)
    assert store.archived_body("A1-enr-1") == batch.archive[0].body
    assert store.archived_body("A1-pay-202601") == batch.archive[2].body
    assert store.archived_body("nope") is None


def test_snapshots_round_trip(store: LedgerStore) -> None:
    a1 = account("A1", month_state("A1", JAN, 45_000, 45_000), month_state("A1", FEB, 45_000, held_cents=7))
    a1.months[month_key(None)] = MonthState(month=None)
    part = PartitionState(
        partition=3, business_date=date(2026, 2, 1), business_date_event_id="day-2026-02-01",
        rates={"PPO|EE": [RateEntry(rate_id="r1", month_from=JAN, month_through=None, total_cents=45_000,
                                    employee_cents=15_000, employer_cents=30_000, event_id="rate-1")]},
    )  # fmt: skip
    store.commit_batch(BatchWrite(
        accounts={"A1": a1}, partitions={3: part}, dirty_months={"A1": set(a1.months)},
        positions=[advance(None, 1, partition=3, applied=1)],
    ))  # fmt: skip
    loaded = store.load_accounts(["A1", "missing"])
    assert list(loaded) == ["A1"] and loaded["A1"] == a1
    assert loaded["A1"] is not a1  # a copy: callers never share mutable state with the store
    assert store.load_partitions([3, 0]) == {3: part}
    # A month with no coverage month (payments naming none) is state only, not a projection row.
    bal = store.balance("A1")
    assert bal is not None and [m.coverage_month for m in bal.months] == [JAN, FEB]


def test_a_load_keeps_the_months_in_the_order_they_were_added(store: LedgerStore) -> None:
    # a retroactive bill adds an earlier month after later ones; the fold sees the months as it left them
    a1 = account("A1", month_state("A1", FEB, 45_000))
    a1.months[month_key(None)] = MonthState(month=None)
    store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": set(a1.months)}))
    a1.months[month_key(JAN)] = month_state("A1", JAN, 45_000, 45_000)
    a1.months[month_key(FEB)].expected_cents = 44_000
    store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": {month_key(JAN), month_key(FEB)}}))
    loaded = store.load_accounts(["A1"])["A1"]
    assert list(loaded.months) == [month_key(FEB), month_key(None), month_key(JAN)]
    assert loaded == a1


def test_a_whole_account_snapshot_of_an_older_version_loads_and_is_stored_split_at_its_next_write(
    store: LedgerStore,
) -> None:
    whole = account("A1", month_state("A1", JAN, 45_000, 45_000), month_state("A1", FEB, 45_000))
    _put_whole_snapshot(store, whole)
    loaded = store.load_accounts(["A1"])["A1"]
    assert loaded == whole
    # the next write names only February, yet January must not be lost with the months leaving the header
    loaded.months[month_key(FEB)].expected_cents = 45_000
    store.commit_batch(BatchWrite(accounts={"A1": loaded}, dirty_months={"A1": {month_key(FEB)}}))
    again = store.load_accounts(["A1"])["A1"]
    assert again == loaded and list(again.months) == [month_key(JAN), month_key(FEB)]
    assert _stored_header(store, "A1").months == {}  # the months now live in their own rows


def test_a_write_that_changed_a_month_it_did_not_mark_fails_in_check_mode(store: LedgerStore) -> None:
    a1 = account("A1", month_state("A1", JAN, 45_000), month_state("A1", FEB, 45_000))
    store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": set(a1.months)}))
    a1.months[month_key(JAN)].expected_cents = 1  # changed, not marked: its stored row would go stale
    with pytest.raises(AssertionError, match="row 2026-01-01 or its findings changed but it was not marked"):
        store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": {month_key(FEB)}}))


def _finding(did: str, kind: str, month: date | None, **work: object) -> OpenDiscrepancy:
    return OpenDiscrepancy(
        discrepancy_id=did, kind=kind, key=f"{kind}|{month_key(month)}", coverage_month=month,
        payer_id="AG-1", expected_cents=45_000, actual_cents=0, cause_event_ids=("e1",), explanation="x",
        action="pay", actor="agency", opened_by="e1", **work,
    )


def test_the_findings_about_a_month_are_stored_with_its_row_and_the_header_keeps_only_the_others(
    store: LedgerStore,
) -> None:
    a1 = account("A1", month_state("A1", JAN, 45_000), month_state("A1", FEB, 45_000))
    for d in (_finding("d-jan", "missing_payment", JAN), _finding("d-mar", "enrolled_not_billed", date(2026, 3, 1)),
              _finding("d-feb", "underpaid", FEB)):
        a1.open[d.key] = d
    waived = _finding("d-old", "underpaid", JAN, work_status="waived", suppress=True)
    a1.closed[waived.discrepancy_id] = waived
    store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": set(a1.months)}))
    header = _stored_header(store, "A1")
    assert list(header.open) == ["enrolled_not_billed|2026-03-01"] and header.closed == {}  # no row for March
    loaded = store.load_accounts(["A1"])["A1"]
    assert loaded.open == a1.open and loaded.closed == a1.closed
    # a write that marks only February leaves January's findings where they are
    a1.open["underpaid|2026-02-01"].assignee = "sam"
    store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": {month_key(FEB)}}))
    again = store.load_accounts(["A1"])["A1"]
    assert again.open == a1.open and again.closed == a1.closed
    assert again.open["underpaid|2026-02-01"].assignee == "sam"


def test_a_header_of_an_older_version_holding_every_finding_has_them_moved_to_the_month_rows_at_its_next_write(
    store: LedgerStore,
) -> None:
    a1 = account("A1", month_state("A1", JAN, 45_000), month_state("A1", FEB, 45_000))
    store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": set(a1.months)}))
    jan = _finding("d-jan", "missing_payment", JAN)
    a1.open[jan.key] = jan
    _put_header(store, a1)  # as written before month rows held findings: the header holds them all
    loaded = store.load_accounts(["A1"])["A1"]
    assert loaded.open == {jan.key: jan}
    # the next write names only February: January's finding must not be lost leaving the header
    store.commit_batch(BatchWrite(accounts={"A1": loaded}, dirty_months={"A1": {month_key(FEB)}}))
    assert _stored_header(store, "A1").open == {}
    assert store.load_accounts(["A1"])["A1"].open == {jan.key: jan}


def test_a_write_that_changed_a_finding_of_a_month_it_did_not_mark_fails_in_check_mode(store: LedgerStore) -> None:
    a1 = account("A1", month_state("A1", JAN, 45_000), month_state("A1", FEB, 45_000))
    jan = _finding("d-jan", "missing_payment", JAN)
    a1.open[jan.key] = jan
    store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": set(a1.months)}))
    jan.assignee = "sam"  # changed, its month not marked: its stored row would go stale
    with pytest.raises(AssertionError, match="row 2026-01-01 or its findings changed but it was not marked"):
        store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": {month_key(FEB)}}))


def _payer(*remittance_ids: str) -> AccountState:
    payer = AccountState(account_id="payer:AG-1", partition=0)
    for r in remittance_ids:
        payer.remittances[r] = RemittanceBook(remittance_id=r, payer_id="AG-1", total_cents=90_000, line_count=2)
        mismatch = _finding(f"d-{r}", "remittance_total_mismatch", None)
        mismatch.key = f"remittance_total_mismatch|remittance:{r}"
        payer.open[mismatch.key] = mismatch
    return payer


def test_a_payers_remittance_books_and_their_findings_are_stored_as_rows_of_their_own(store: LedgerStore) -> None:
    payer = _payer("R1", "R2", "R3")
    store.commit_batch(BatchWrite(accounts={payer.account_id: payer},
                                  dirty_months={payer.account_id: {"remittance:R1", "remittance:R2", "remittance:R3"}}))
    header = _stored_header(store, payer.account_id)
    assert header.remittances == {} and header.open == {}  # the header does not grow with the remittances
    # a write that marks only R2 leaves the other books where they are
    payer.remittances["R2"].posted_cents, payer.remittances["R2"].posted_count = 45_000, 1
    store.commit_batch(BatchWrite(accounts={payer.account_id: payer},
                                  dirty_months={payer.account_id: {"remittance:R2"}}))
    loaded = store.load_accounts([payer.account_id])[payer.account_id]
    assert loaded == payer and list(loaded.remittances) == ["R1", "R2", "R3"] and list(loaded.open) == list(payer.open)


def test_a_header_of_an_older_version_holding_the_books_has_them_moved_to_rows_at_its_next_write(
    store: LedgerStore,
) -> None:
    payer = _payer("R1", "R2")
    _put_header(store, payer)  # as written before books had rows: the header holds the books and findings
    loaded = store.load_accounts([payer.account_id])[payer.account_id]
    assert loaded == payer
    store.commit_batch(BatchWrite(accounts={payer.account_id: loaded}, dirty_months={payer.account_id: set()}))
    assert _stored_header(store, payer.account_id).remittances == {}
    assert store.load_accounts([payer.account_id])[payer.account_id] == payer


def test_a_write_that_changed_a_book_it_did_not_mark_fails_in_check_mode(store: LedgerStore) -> None:
    payer = _payer("R1", "R2")
    store.commit_batch(BatchWrite(accounts={payer.account_id: payer},
                                  dirty_months={payer.account_id: {"remittance:R1", "remittance:R2"}}))
    payer.remittances["R1"].judged = True
    with pytest.raises(AssertionError, match="row remittance:R1 or its findings changed but it was not marked"):
        store.commit_batch(BatchWrite(accounts={payer.account_id: payer},
                                      dirty_months={payer.account_id: {"remittance:R2"}}))


def _put_header(store: LedgerStore, state: AccountState) -> None:
    """Store ``state``'s header as versions before rows held findings and books did: with all of them."""
    header = encode_state(msgspec.structs.replace(state, months={}))
    if isinstance(store, MemoryStore):
        store._accounts[state.account_id] = header
        store._account_partition[state.account_id] = state.partition
        return
    from projections.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    with store._tx() as conn:
        conn.execute("INSERT INTO account_snapshot (account_id, partition, state) VALUES (%s, %s, %s)"
                     " ON CONFLICT (account_id) DO UPDATE SET state = excluded.state",
                     (state.account_id, state.partition, header))


def _put_whole_snapshot(store: LedgerStore, state: AccountState) -> None:
    """Store ``state`` as versions before per-month rows did: the whole account in one snapshot."""
    if isinstance(store, MemoryStore):
        store._accounts[state.account_id] = encode_state(state)
        store._account_partition[state.account_id] = state.partition
        return
    from projections.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    with store._tx() as conn:
        conn.execute("INSERT INTO account_snapshot (account_id, partition, state) VALUES (%s, %s, %s)",
                     (state.account_id, state.partition, encode_state(state)))


def _stored_header(store: LedgerStore, account_id: str) -> AccountState:
    if isinstance(store, MemoryStore):
        return decode_account(store._accounts[account_id])
    from projections.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    with store._tx() as conn:
        row = conn.execute("SELECT state FROM account_snapshot WHERE account_id = %s", (account_id,)).fetchone()
    assert row is not None
    return decode_account(bytes(row[0]))


def test_due_accounts_excludes_paid_months_and_open_missing_payment(store: LedgerStore) -> None:
    due_jan = date(2026, 1, 31)
    accounts = {
        "A-unpaid": account("A-unpaid", month_state("A-unpaid", JAN, 45_000)),
        "A-paid": account("A-paid", month_state("A-paid", JAN, 45_000, 45_000)),
        "A-partly": account("A-partly", month_state("A-partly", JAN, 45_000, 100)),
        "A-flagged": account("A-flagged", month_state("A-flagged", JAN, 45_000)),
        "A-flagged-other-month": account(
            "A-flagged-other-month", month_state("A-flagged-other-month", JAN, 45_000)
        ),
        "A-later": account("A-later", month_state("A-later", FEB, 45_000)),
        "A-zero": account("A-zero", month_state("A-zero", JAN, 0)),
        "A-other-partition": account("A-other-partition", month_state("A-other-partition", JAN, 45_000),
                                     partition=1),
    }  # fmt: skip
    missing = discrepancy("d-miss", "A-flagged", "missing_payment", JAN)
    other_month = discrepancy("d-miss-feb", "A-flagged-other-month", "missing_payment", FEB)
    underpaid = discrepancy("d-under", "A-unpaid", "underpaid", JAN)  # not a missing_payment
    store.commit_batch(BatchWrite(
        accounts=accounts, dirty_months={a: {month_key(JAN), month_key(FEB)} for a in accounts},
        discrepancies_opened=[missing, other_month, underpaid],
        positions=[advance(None, 1, applied=1), advance(None, 1, partition=1, applied=1)],
    ))  # fmt: skip

    assert store.due_accounts(0, due_jan) == []  # due_on must be strictly before the date
    assert store.due_accounts(0, due_jan + timedelta(days=1)) == ["A-flagged-other-month", "A-unpaid"]
    assert store.due_accounts(0, date(2026, 4, 1)) == ["A-flagged-other-month", "A-later", "A-unpaid"]
    assert store.due_accounts(1, date(2026, 4, 1)) == ["A-other-partition"]

    # Once the missing_payment is resolved the month is due again.
    store.commit_batch(BatchWrite(
        discrepancies_closed=[DiscrepancyClose("d-miss", resolved_by="day-x", recorded_at=T0)],
        positions=[advance(1, 2, applied=1)],
    ))  # fmt: skip
    assert "A-flagged" in store.due_accounts(0, date(2026, 4, 1))


def test_month_rows_keep_the_premium_shares_post_tax_share_and_imputed_income(store: LedgerStore) -> None:
    jan, feb = month_state("A1", JAN, 154_380), month_state("A1", FEB, 154_380)
    jan.post_tax_cents, jan.imputed_income_cents = 11_395, 64_573
    jan.employee_share_cents, jan.employer_share_cents = 23_157, 131_223
    store.commit_batch(BatchWrite(
        accounts={"A1": account("A1", jan, feb)}, dirty_months={"A1": {month_key(JAN), month_key(FEB)}},
        positions=[advance(None, 1, applied=1)],
    ))  # fmt: skip
    bal = store.balance("A1")
    assert bal is not None
    assert [(m.coverage_month, m.post_tax_cents, m.imputed_income_cents, m.employee_share_cents,
             m.employer_share_cents) for m in bal.months] == [
        (JAN, 11_395, 64_573, 23_157, 131_223), (FEB, None, None, None, None),  # unknown stays unknown, not zero
    ]


def test_month_accounts_lists_accounts_with_a_month_in_the_range_of_one_partition(store: LedgerStore) -> None:
    accounts = {
        "A-jan": account("A-jan", month_state("A-jan", JAN, 45_000)),
        "A-feb": account("A-feb", month_state("A-feb", FEB, 45_000)),
        "A-other-partition": account("A-other-partition", month_state("A-other-partition", JAN, 45_000),
                                     partition=1),
    }  # fmt: skip
    store.commit_batch(BatchWrite(
        accounts=accounts, dirty_months={a: {month_key(JAN), month_key(FEB)} for a in accounts},
        positions=[advance(None, 1, applied=1), advance(None, 1, partition=1, applied=1)],
    ))  # fmt: skip
    assert store.month_accounts(0, JAN, None) == ["A-feb", "A-jan"]
    assert store.month_accounts(0, FEB, None) == ["A-feb"]
    assert store.month_accounts(0, JAN, date(2026, 1, 31)) == ["A-jan"]
    assert store.month_accounts(0, date(2026, 3, 1), None) == []
    assert store.month_accounts(1, JAN, None) == ["A-other-partition"]


def test_discrepancy_lifecycle_open_change_resolve(store: LedgerStore) -> None:
    store.commit_batch(first_batch())
    store.commit_batch(BatchWrite(
        discrepancies_opened=[discrepancy("d1", "A1"), discrepancy("d2", "A1", "missing_payment", FEB)],
        positions=[advance(3, 4, applied=1)],
    ))  # fmt: skip
    assert [d.discrepancy_id for d in store.discrepancies(open_only=True)] == ["d1", "d2"]
    s = store.summary()
    assert s.discrepancies_opened_by_kind == {"missing_payment": 1, "underpaid": 1}
    assert s.discrepancies_open_by_kind == {"missing_payment": 1, "underpaid": 1}

    changed = discrepancy("d1", "A1", expected=45_000, actual=30_000)
    changed.explanation = "paid less again"
    changed.cause_event_ids = ("A1-pay-202601", "A1-pay-202601b")
    store.commit_batch(BatchWrite(discrepancies_changed=[changed], positions=[advance(4, 5, applied=1)]))
    d1 = store.discrepancies(kind="underpaid")[0]
    assert (d1.expected_cents, d1.actual_cents, d1.explanation) == (45_000, 30_000, "paid less again")
    assert d1.cause_event_ids == ("A1-pay-202601", "A1-pay-202601b")
    assert d1.status == "open" and d1.opened_recorded_at == T0 and d1.action == "notify coordinator"

    closed_at = T0 + timedelta(days=3)
    store.commit_batch(BatchWrite(
        discrepancies_closed=[DiscrepancyClose("d1", resolved_by="A1-pay-202601c", recorded_at=closed_at)],
        positions=[advance(5, 6, applied=1)],
    ))  # fmt: skip
    d1 = store.discrepancies(kind="underpaid")[0]
    assert (d1.status, d1.resolved_by, d1.resolved_recorded_at) == ("resolved", "A1-pay-202601c", closed_at)
    assert [d.discrepancy_id for d in store.discrepancies(open_only=True)] == ["d2"]
    bal = store.balance("A1")
    assert bal is not None and [d.discrepancy_id for d in bal.open_discrepancies] == ["d2"]
    s = store.summary()
    assert s.discrepancies_opened_by_kind == {"missing_payment": 1, "underpaid": 1}
    assert s.discrepancies_open_by_kind == {"missing_payment": 1}


def test_a_superseded_discrepancy_is_closed_but_not_resolved(store: LedgerStore) -> None:
    store.commit_batch(first_batch())
    store.commit_batch(BatchWrite(discrepancies_opened=[discrepancy("d1", "A1", "wrong_rate")],
                                  positions=[advance(3, 4, applied=1)]))
    store.commit_batch(BatchWrite(
        discrepancies_closed=[DiscrepancyClose("d1", resolved_by="late-change", recorded_at=T0,
                                               status="superseded")],
        positions=[advance(4, 5, applied=1)],
    ))  # fmt: skip
    [d1] = store.discrepancies()
    assert (d1.status, d1.resolved_by) == ("superseded", "late-change")
    assert store.discrepancies(open_only=True) == []
    assert store.summary().discrepancies_open_by_kind == {}


def test_discrepancies_filter_sort_and_limit(store: LedgerStore) -> None:
    rows = [
        discrepancy("z", "a1", "underpaid", FEB),
        discrepancy("y", "a1", "overpaid", FEB),
        discrepancy("x", "a1", "unmatched_payment", None),
        discrepancy("w", "B2", "underpaid", JAN),
        discrepancy("v", "a1", "underpaid", JAN),
    ]
    store.commit_batch(BatchWrite(discrepancies_opened=rows, positions=[advance(None, 1)]))
    # By account (code-point order: "B2" < "a1"), month with none first, kind, id.
    assert [d.discrepancy_id for d in store.discrepancies()] == ["w", "x", "v", "y", "z"]
    assert [d.discrepancy_id for d in store.discrepancies(account_id="a1", limit=2)] == ["x", "v"]
    assert [d.discrepancy_id for d in store.discrepancies(kind="underpaid")] == ["w", "v", "z"]
    only = store.discrepancies(kind="underpaid", account_id="B2")
    assert only == [discrepancy("w", "B2", "underpaid", JAN)]


def test_rows_handed_in_or_out_are_not_shared_with_the_store(store: LedgerStore) -> None:
    mine = discrepancy("d1", "A1")
    store.commit_batch(BatchWrite(discrepancies_opened=[mine], positions=[advance(None, 1)]))
    mine.status, mine.actual_cents = "resolved", 0
    returned = store.discrepancies()[0]
    returned.explanation = "edited by a caller"
    store.commit_batch(BatchWrite(
        discrepancies_closed=[DiscrepancyClose("d1", resolved_by="e9", recorded_at=T0)],
        positions=[advance(1, 2)],
    ))  # fmt: skip
    assert returned.status == "open"
    stored = store.discrepancies()[0]
    assert (stored.status, stored.actual_cents, stored.explanation) == ("resolved", 40_000, "underpaid on A1")


def test_outbox_pending_then_published(store: LedgerStore) -> None:
    rows = [OutboxRow(event_id=f"d{i}:opened", key=f"A{i}", body=b'{"n":%d}' % i) for i in range(5)]
    store.commit_batch(BatchWrite(outbox=rows[:3], positions=[advance(None, 1)]))
    store.commit_batch(BatchWrite(outbox=rows[3:], positions=[advance(1, 2)]))
    pending = store.outbox_pending(10)
    assert [r for _, r in pending] == rows
    seqs = [s for s, _ in pending]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert store.outbox_pending(2) == pending[:2]

    store.mark_published(seqs[:2])
    assert store.outbox_pending(10) == pending[2:]
    store.mark_published([seqs[3]])
    store.mark_published(seqs[:2])  # publishing again is harmless
    assert store.outbox_pending(10) == [pending[2], pending[4]]
    store.mark_published([])
    store.mark_published([s for s, _ in store.outbox_pending(10)])
    assert store.outbox_pending(10) == []


def test_payer_unapplied_accumulates_deltas(store: LedgerStore) -> None:
    store.commit_batch(BatchWrite(
        payer_unapplied_delta={"P2": 1_000, "P1": 250}, positions=[advance(None, 1)]
    ))
    store.commit_batch(BatchWrite(payer_unapplied_delta={"P2": 500, "P3": 75}, positions=[advance(1, 2)]))
    assert store.payer_unapplied() == {"P1": 250, "P2": 1_500, "P3": 75}
    assert list(store.payer_unapplied()) == ["P1", "P2", "P3"]
    store.commit_batch(BatchWrite(payer_unapplied_delta={"P1": -250, "P3": 0}, positions=[advance(2, 3)]))
    assert store.payer_unapplied() == {"P2": 1_500, "P3": 75}  # zero balances are not listed
    assert store.summary().unapplied_cents == 1_575


def test_dead_letters_are_recorded_once_per_position(store: LedgerStore) -> None:
    dead = DeadLetterRow(
        log_id=LOG, topic=BILLING, partition=0, offset=0, event_id=None, reason="not JSON", field=None,
        key=b"A1", raw=b"\x00garbage", recorded_at=T0,
    )
    dead2 = DeadLetterRow(
        log_id=LOG, topic=BILLING, partition=0, offset=1, event_id="e1", reason="amount must be positive",
        field="amount_cents", key=None, raw=b"{}", recorded_at=T0,
    )
    store.commit_batch(BatchWrite(dead_letters=[dead, dead2], positions=[advance(None, 2, dead_lettered=2)]))
    assert store.dead_letters() == [dead, dead2]
    assert store.dead_letters(limit=1) == [dead]
    before = snapshot(store)
    with pytest.raises(PositionConflict):
        store.commit_batch(BatchWrite(dead_letters=[dead2], positions=[advance(2, 3, dead_lettered=1)]))
    assert snapshot(store) == before
    assert store.counts().dead_lettered == 2


def test_agency_accounts_come_from_the_subscriber_coverage(store: LedgerStore) -> None:
    store.commit_batch(first_batch())
    assert store.agency_accounts(["AG1"]) == ["A1"]
    assert store.agency_accounts(["AG-OTHER"]) == []


def test_cycle_accounts_are_the_covered_or_monthed_accounts_without_a_bill_for_the_month(store: LedgerStore) -> None:
    """What a closing billing cycle may judge, without loading the accounts billed as they should be."""
    ended = account("A-ended")
    ended.coverages[0].begin, ended.coverages[0].end = date(2025, 6, 1), date(2025, 12, 31)
    late = account("A-from-jan-20")
    late.coverages[0].begin = date(2026, 1, 20)
    accounts = {
        "A-billed": account("A-billed", month_state("A-billed", JAN, 45_000)),
        "A-unbilled": account("A-unbilled"),
        "A-paid-not-billed": account("A-paid-not-billed", month_state("A-paid-not-billed", JAN, 0, 45_000)),
        "A-ended": ended,
        "A-from-jan-20": late,
        "A-billed-feb": account("A-billed-feb", month_state("A-billed-feb", FEB, 45_000)),
        "A-other-partition": account("A-other-partition", partition=1),
    }
    accounts["A-paid-not-billed"].coverages.clear()  # no coverage, but a month: judged all the same
    store.commit_batch(BatchWrite(
        accounts=accounts, dirty_months={a: {month_key(JAN), month_key(FEB)} for a in accounts},
        coverage_changed=set(accounts),
        positions=[advance(None, 1, applied=1), advance(None, 1, partition=1, applied=1)],
    ))  # fmt: skip
    assert store.cycle_accounts(0, JAN) == ["A-billed-feb", "A-from-jan-20", "A-paid-not-billed", "A-unbilled"]
    assert store.cycle_accounts(0, FEB) == ["A-billed", "A-from-jan-20", "A-unbilled"]
    assert store.cycle_accounts(0, date(2025, 12, 1)) == ["A-ended"]
    assert store.cycle_accounts(1, JAN) == ["A-other-partition"]


def test_counts_add_up(store: LedgerStore) -> None:
    store.commit_batch(first_batch())
    store.commit_batch(BatchWrite(positions=[
        advance(3, 10, applied=4, duplicates=2, dead_lettered=1),
        advance(None, 5, partition=1, applied=3, duplicates=1, dead_lettered=1),
        advance(None, 2, topic="ledger.control", applied=2),
    ]))  # fmt: skip
    c = store.counts()
    assert (c.applied, c.duplicates, c.dead_lettered) == (12, 3, 2)
    assert c.received == c.applied + c.duplicates + c.dead_lettered == 17
    assert store.summary().counts == c
    assert store.positions(LOG) == {(BILLING, 0): 10, (BILLING, 1): 5, ("ledger.control", 0): 2}
    assert store.positions("another-log") == {}


# ---------------------------------------------------------------------------------------------
# PostgreSQL only


def test_migrations_are_recorded_and_rerunning_is_a_no_op(pg_dsn: str) -> None:
    from projections.postgres import PostgresStore, migration_files

    versions = [f.name.removesuffix(".sql") for f in migration_files()]
    assert versions and versions[0] == "0001_initial"
    pg = PostgresStore(pg_dsn)
    try:
        pg.migrate()
        assert pg.applied_migrations() == versions
        pg.commit_batch(first_batch())
        pg.migrate()
        pg.migrate()
        assert pg.applied_migrations() == versions
        assert pg.archive_count() == 3
    finally:
        pg.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(versions),)


def test_two_workers_migrating_at_once_do_not_collide(pg_dsn: str) -> None:
    from projections.postgres import PostgresStore, migration_files

    stores = [PostgresStore(pg_dsn) for _ in range(3)]
    failures: list[BaseException] = []

    def run(s: PostgresStore) -> None:
        try:
            s.migrate()
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert failures == []
        assert stores[0].applied_migrations() == [f.name.removesuffix(".sql") for f in migration_files()]
    finally:
        for s in stores:
            s.close()


def test_archive_rejects_update_delete_and_truncate(pg_dsn: str) -> None:
    from projections.postgres import PostgresStore

    pg = PostgresStore(pg_dsn)
    try:
        pg.migrate()
        pg.commit_batch(first_batch())
    finally:
        pg.close()
    statements = [
        "UPDATE archive SET account_id = 'X' WHERE seq = 1",
        "DELETE FROM archive WHERE seq = 1",
        "TRUNCATE archive",
    ]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for statement in statements:
            with pytest.raises(psycopg.Error, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM archive").fetchone() == (3,)
        # The jsonb view reads the canonical bodies.
        row = conn.execute(
            "SELECT body->>'type', body->>'amount_cents' FROM archive_json WHERE event_id = 'A1-bill-202601'"
        ).fetchone()
        assert row == ("premium_billed", "45000")


def test_archive_keeps_the_order_applied_and_recorded_time(pg_dsn: str) -> None:
    from projections.postgres import PostgresStore

    pg = PostgresStore(pg_dsn)
    try:
        pg.migrate()
        batch = first_batch()
        later = T0 + timedelta(hours=5)
        batch.archive[2] = archive_row(paid("A1"), 2, recorded_at=later)
        pg.commit_batch(batch)
    finally:
        pg.close()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT event_id, recorded_at, body FROM archive ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == ["A1-enr-1", "A1-bill-202601", "A1-pay-202601"]
    assert rows[2][1] == later and bytes(rows[2][2]) == encode(paid("A1"))


def test_two_writers_of_one_partition_only_one_wins(pg_dsn: str) -> None:
    from projections.postgres import PostgresStore

    first, second = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    try:
        first.migrate()
        first.commit_batch(first_batch())
        # Both read position 3 and each built a batch from it; the slower one must lose.
        a = BatchWrite(archive=[archive_row(billed("A1", FEB), 3)], positions=[advance(3, 4, applied=1)])
        b = BatchWrite(archive=[archive_row(billed("A2", FEB), 3, dedupe_key="other")],
                       positions=[advance(3, 4, applied=1)])  # fmt: skip
        first.commit_batch(a)
        with pytest.raises(PositionConflict):
            second.commit_batch(b)
        assert second.archive_count() == 4 and second.positions(LOG) == {(BILLING, 0): 4}
    finally:
        first.close()
        second.close()


def test_store_reconnects_after_losing_its_connection(pg_dsn: str) -> None:
    from projections.postgres import PostgresStore

    pg = PostgresStore(pg_dsn)
    try:
        pg.migrate()
        pg.commit_batch(first_batch())
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(psycopg.OperationalError):
            pg.archive_count()
        assert pg.archive_count() == 3  # the next call reconnects
    finally:
        pg.close()


def test_memory_and_postgres_agree_on_random_batches(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeded random batches (some stale) give the same observable state in both stores."""
    import random

    monkeypatch.delenv("LEDGER_CHECK_MONTH_WRITES")  # random states, random dirty marks: not a fold's writes

    from projections.postgres import PostgresStore

    rng = random.Random(20260105)
    names = ["a1", "B2", "c-3", "C3", "d_4", "e5"]
    months = [date(2026, m, 1) for m in range(1, 7)]
    kinds = ["underpaid", "missing_payment", "overpaid", "unmatched_payment"]
    memory, pg = MemoryStore(), PostgresStore(pg_dsn)
    pg.migrate()
    stores: list[LedgerStore] = [memory, pg]
    offsets: dict[int, int | None] = {0: None, 1: None}
    open_ids: list[str] = []
    event_no = 0

    def observe(s: LedgerStore) -> tuple[object, ...]:
        return (
            s.summary(), [s.balance(a) for a in names], s.discrepancies(), s.discrepancies(open_only=True),
            s.discrepancies(kind="missing_payment", limit=3), s.payer_unapplied(), s.positions(LOG),
            s.archive_count(), s.dead_letters(), s.outbox_pending(1000), s.load_accounts(names),
            s.load_partitions([0, 1]),
            [s.due_accounts(p, d) for p in (0, 1) for d in (date(2026, 2, 15), date(2026, 8, 1))],
            s.find_events([f"ev{i}" for i in range(0, event_no + 2, 3)]),
        )

    try:
        for round_no in range(40):
            partition = rng.choice([0, 1])
            batch = BatchWrite()
            start = offsets[partition]
            at = start or 0
            for account_id in rng.sample(names, rng.randint(0, 3)):
                ms = [month_state(account_id, m, rng.choice([0, 30_000, 45_000]),
                                  rng.choice([0, 0, 10_000, 45_000, 50_000]), held_cents=rng.choice([0, 5]))
                      for m in rng.sample(months, rng.randint(1, 4))]  # fmt: skip
                batch.accounts[account_id] = account(
                    account_id, *ms, partition=partition, members=rng.randint(1, 3)
                )
                batch.dirty_months[account_id] = {month_key(m.month) for m in ms if rng.random() < 0.7}
                if rng.random() < 0.5:
                    batch.coverage_changed.add(account_id)
                if rng.random() < 0.4:
                    did = f"d{round_no}-{account_id}"
                    batch.discrepancies_opened.append(discrepancy(
                        did, account_id, rng.choice(kinds), rng.choice([None, *months]),
                        actual=rng.randint(0, 50_000),
                    ))  # fmt: skip
                    batch.outbox.append(
                        OutboxRow(event_id=f"{did}:opened", key=account_id, body=did.encode())
                    )
                event = billed(account_id, rng.choice(months))
                event_no += 1
                batch.archive.append(archive_row(event, at, partition=partition, dedupe_key=f"ev{event_no}"))
                at += 1
            for did in list(open_ids):
                roll = rng.random()
                if roll < 0.2:
                    batch.discrepancies_closed.append(DiscrepancyClose(did, f"close-{round_no}", T0))
                    open_ids.remove(did)
                elif roll < 0.4:
                    changed = discrepancy(did, "x", actual=rng.randint(0, 9), expected=rng.randint(0, 9))
                    changed.explanation = f"changed in {round_no}"
                    batch.discrepancies_changed.append(changed)
            if rng.random() < 0.3:
                batch.dead_letters.append(DeadLetterRow(
                    log_id=LOG, topic=BILLING, partition=partition, offset=at, event_id=None,
                    reason=f"bad {round_no}", field=None, key=None, raw=b"?", recorded_at=T0,
                ))  # fmt: skip
                at += 1
            if rng.random() < 0.3:
                batch.partitions[partition] = PartitionState(partition=partition, business_date=months[0])
            batch.payer_unapplied_delta = {rng.choice(["P1", "P2"]): rng.randint(-100, 100)}
            stale = rng.random() < 0.15 and start is not None
            expected = (start - 1) if stale and start is not None else start
            batch.positions = [advance(expected, at + 1, partition=partition, applied=len(batch.archive),
                                       dead_lettered=len(batch.dead_letters), duplicates=1)]  # fmt: skip
            outcomes = []
            for s in stores:
                try:
                    s.commit_batch(batch)
                    outcomes.append("ok")
                except PositionConflict:
                    outcomes.append("conflict")
            assert outcomes == ["conflict"] * 2 if stale else ["ok"] * 2
            if not stale:
                offsets[partition] = at + 1
                open_ids.extend(d.discrepancy_id for d in batch.discrepancies_opened)
            if round_no % 5 == 4:
                assert observe(memory) == observe(pg)
                pending = memory.outbox_pending(2)
                for s in stores:
                    s.mark_published([seq for seq, _ in pending])
        assert observe(memory) == observe(pg)
    finally:
        pg.close()


def test_migrations_land_in_the_schema_on_the_search_path(pg_dsn: str) -> None:
    """No schema name is hard-coded, so a rebuild can migrate and fill a fresh schema."""
    from psycopg.conninfo import make_conninfo

    from projections.postgres import PostgresStore

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA rebuild")
    rebuild = PostgresStore(make_conninfo(pg_dsn, options="-c search_path=rebuild"))
    live = PostgresStore(pg_dsn)
    try:
        rebuild.migrate()
        rebuild.commit_batch(first_batch())
        live.migrate()
        assert (rebuild.archive_count(), live.archive_count()) == (3, 0)
        with pytest.raises(psycopg.Error, match="append-only"):
            rebuild.commit_batch(BatchWrite())  # a no-op batch still works ...
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute("DELETE FROM rebuild.archive")  # ... and the trigger came along
    finally:
        rebuild.close()
        live.close()
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute(
            "SELECT table_schema, count(*) FROM information_schema.tables"
            " WHERE table_schema IN ('rebuild', 'public') GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert tables[0][0] == "public" and tables[0][1] == tables[1][1] and tables[1][0] == "rebuild"


# ---------------------------------------------------------------------------------------------
# Flexible spending accounts (issue 8)


def _fsa_account(account_id: str, reimbursed: int) -> AccountState:
    state = AccountState(account_id=account_id, partition=0)
    state.fsa = FsaState(years={
        "2026|health": FsaYear(plan_year=2026, account_type="health", member_id=account_id, election_cents=240_000,
                               elected=True, reimbursed_cents=reimbursed),
        "2026|dependent_care": FsaYear(plan_year=2026, account_type="dependent_care", member_id=account_id,
                                       election_cents=500_000, elected=True, contributed_cents=19_231,
                                       reimbursed_cents=19_231),
    })
    return state


def test_fsa_accounts_are_projected_only_when_the_batch_says_they_moved(store: LedgerStore) -> None:
    store.commit_batch(BatchWrite(accounts={"F1": _fsa_account("F1", 150_000)}, fsa_changed={"F1"},
                                  positions=[advance(None, 1)]))
    rows = store.fsa_accounts("F1")
    assert [(r.plan_year, r.account_type, r.election_cents, r.contributed_cents, r.reimbursed_cents,
             r.available_cents, r.closed) for r in rows] == [
        (2026, "dependent_care", 500_000, 19_231, 19_231, 0, False),
        (2026, "health", 240_000, 0, 150_000, 90_000, False),
    ]
    # a snapshot write without fsa_changed leaves the rows; with it they are replaced (upsert)
    store.commit_batch(BatchWrite(accounts={"F1": _fsa_account("F1", 200_000)}, positions=[advance(1, 2)]))
    assert store.fsa_accounts("F1") == rows
    store.commit_batch(BatchWrite(accounts={"F1": _fsa_account("F1", 200_000)}, fsa_changed={"F1"},
                                  positions=[advance(2, 3)]))
    health = [r for r in store.fsa_accounts("F1") if r.account_type == "health"]
    assert [(r.reimbursed_cents, r.available_cents) for r in health] == [(200_000, 40_000)]
    assert store.fsa_accounts("nobody") == []
    assert store.load_accounts(["F1"])["F1"].fsa == _fsa_account("F1", 200_000).fsa


def test_fsa_open_accounts_lists_open_plan_years_up_to_a_year_on_one_partition(store: LedgerStore) -> None:
    closed = _fsa_account("F-closed", 0)
    assert closed.fsa is not None
    for y in closed.fsa.years.values():
        y.closed = True
    other = _fsa_account("F-other", 0)
    other.partition = 1
    store.commit_batch(BatchWrite(
        accounts={"F-open": _fsa_account("F-open", 0), "F-closed": closed, "F-other": other},
        fsa_changed={"F-open", "F-closed", "F-other"},
        positions=[advance(None, 1), advance(None, 1, partition=1)],
    ))  # fmt: skip
    assert store.fsa_open_accounts(0, 2026) == ["F-open"]
    assert store.fsa_open_accounts(0, 2025) == []  # its open year is 2026
    assert store.fsa_open_accounts(1, 2030) == ["F-other"]


def test_outbox_rows_keep_their_stream(store: LedgerStore) -> None:
    rows = [OutboxRow(event_id="d1:opened", key="A1", body=b"{}"),
            OutboxRow(event_id="c1:adjudicated", key="A1", body=b"{}", stream=CLAIMS_STREAM)]
    store.commit_batch(BatchWrite(outbox=rows, positions=[advance(None, 1)]))
    assert [(r.event_id, r.stream) for _, r in store.outbox_pending(10)] == [
        ("d1:opened", DISCREPANCIES_STREAM), ("c1:adjudicated", CLAIMS_STREAM)]


def test_member_months_lists_every_account_month_in_order_up_to_the_limit(store: LedgerStore) -> None:
    batch = first_batch()
    batch.archive.append(archive_row(billed("A2", JAN, 30_000), 3, partition=0))
    batch.accounts["A2"] = account("A2", month_state("A2", FEB, 30_000, 0), month_state("A2", JAN, 12_000, 500))
    batch.dirty_months["A2"] = {month_key(JAN), month_key(FEB)}
    batch.positions = [advance(None, 4, applied=4)]
    store.commit_batch(batch)

    rows = store.member_months(limit=100)
    assert [(m.account_id, m.coverage_month, m.billed_cents, m.paid_cents, m.balance_cents) for m in rows] == [
        ("A1", JAN, 45_000, 45_000, 0), ("A2", JAN, 12_000, 500, 11_500), ("A2", FEB, 30_000, 0, 30_000)]
    balances = [store.balance(a) for a in ("A1", "A2")]
    assert rows == [m for b in balances if b is not None for m in b.months]  # the same rows balance shows
    assert store.member_months(limit=2) == rows[:2]


# ---------------------------------------------------------------------------------------------
# The workbench's reads: the queue, one discrepancy, an account's history, what became of an event,
# agencies and accounts


def _covered(account_id: str, *agencies: tuple[str, date], partition: int = 0) -> AccountState:
    """An account whose subscriber had coverage paid by each agency from its date on."""
    return AccountState(account_id=account_id, partition=partition, coverages=[
        CoverageSegment(member_id=account_id, relationship="self", coverage_line=line, plan="PPO", tier="EE",
                        status="active", begin=begin, end=None, agency_id=agency, event_id=f"{account_id}-{line}")
        for (agency, begin), line in zip(agencies, ("health", "dental", "vision"), strict=False)
    ])


def _queue_batch() -> BatchWrite:
    a = _covered("A", ("AG1", JAN), ("AG2", FEB))  # the coverage that began last is AG2's
    b = _covered("B", ("AG1", JAN))
    b.months[month_key(JAN)] = month_state("B", JAN, 45_000)
    d1 = discrepancy("d1", "A")
    d1.opened_recorded_at, d1.assignee, d1.notes, d1.last_user = T0 + timedelta(hours=1), "sam", 2, "sam"
    d2 = discrepancy("d2", "B", "missing_payment", expected=45_000, actual=0)
    d2.actor, d2.pending_action, d2.pending_cents, d2.pending_by, d2.pending_event_id = (
        "member", "waive", -45_000, "sam", "w1")
    d3 = discrepancy("d3", "payer:AG3", "remittance_total_mismatch", None, expected=100, actual=300)
    d3.actor, d3.opened_recorded_at, d3.work_status = "payroll", None, "waiting_agency"
    d4 = discrepancy("d4", "U", "unmatched_payment", expected=0, actual=5_000)
    d4.payer_id, d4.opened_recorded_at = "AG4", T0 + timedelta(hours=2)
    d5 = discrepancy("d5", "B", "overpaid")
    d5.status = "resolved"
    return BatchWrite(
        accounts={"A": a, "B": b, "payer:AG3": AccountState(account_id="payer:AG3", partition=0),
                  "U": AccountState(account_id="U", partition=0)},
        dirty_months={"B": {month_key(JAN)}}, coverage_changed={"A", "B"},
        discrepancies_opened=[d1, d2, d3, d4, d5], positions=[advance(None, 1)],
    )


def _ids(page: object) -> list[str]:
    return [d.discrepancy_id for d in page.rows]  # type: ignore[attr-defined]


def test_the_queue_filters_by_agency_actor_assignee_and_approval_and_sorts_every_way(store: LedgerStore) -> None:
    from projections.model import UNASSIGNED, QueueQuery

    store.commit_batch(_queue_batch())
    q = store.discrepancy_queue
    page = q(QueueQuery())
    assert _ids(page) == ["d2", "d1", "d4", "d3"] and page.total == 4  # oldest first, unknown age last
    assert {d.discrepancy_id: d.agency_id for d in page.rows} == {"d1": "AG2", "d2": "AG1", "d3": "AG3", "d4": "AG4"}
    assert _ids(q(QueueQuery(agency_id="AG2"))) == ["d1"]
    assert _ids(q(QueueQuery(agency_id="AG1", status=None))) == ["d2", "d5"]
    assert _ids(q(QueueQuery(assignee=UNASSIGNED))) == ["d2", "d4", "d3"]
    assert _ids(q(QueueQuery(assignee="sam"))) == ["d1"]
    assert _ids(q(QueueQuery(pending=True))) == ["d2"]
    assert _ids(q(QueueQuery(pending=False, actor="agency_coordinator"))) == ["d1", "d4"]
    assert _ids(q(QueueQuery(work_status="waiting_agency"))) == ["d3"]
    assert _ids(q(QueueQuery(payer_id="AG4"))) == ["d4"]
    assert _ids(q(QueueQuery(sort="amount"))) == ["d2", "d1", "d4", "d3"]  # largest difference first, ties by id
    assert _ids(q(QueueQuery(sort="amount", descending=True))) == ["d3", "d1", "d4", "d2"]
    assert _ids(q(QueueQuery(sort="agency"))) == ["d2", "d1", "d3", "d4"]
    assert _ids(q(QueueQuery(sort="assignee"))) == ["d1", "d2", "d3", "d4"]  # nobody's last
    assert _ids(q(QueueQuery(sort="actor"))) == ["d1", "d4", "d2", "d3"]
    assert _ids(q(QueueQuery(sort="kind", descending=True))) == ["d4", "d1", "d3", "d2"]
    paged = q(QueueQuery(limit=2, offset=1))
    assert _ids(paged) == ["d1", "d4"] and paged.total == 4
    one = store.discrepancy("d2")
    assert one is not None and (one.agency_id, one.pending_action, one.pending_cents, one.pending_by) == (
        "AG1", "waive", -45_000, "sam")
    assert store.discrepancy("nope") is None
    with pytest.raises(ValueError, match="sort must be one of"):
        QueueQuery(sort="mood")


def test_a_change_of_work_keeps_the_status_a_closing_gave(store: LedgerStore) -> None:
    store.commit_batch(_queue_batch())
    store.commit_batch(BatchWrite(discrepancies_closed=[
        DiscrepancyClose("d1", resolved_by="w2", recorded_at=T0, status="waived")], positions=[advance(1, 2)]))
    changed = discrepancy("d1", "A")  # as the processor hands it in: the fold's view, status "open"
    changed.work_status, changed.last_user, changed.last_reason, changed.notes = "waived", "sue", "hardship", 3
    store.commit_batch(BatchWrite(discrepancies_changed=[changed], positions=[advance(2, 3)]))
    d1 = store.discrepancy("d1")
    assert d1 is not None
    assert (d1.status, d1.resolved_by, d1.work_status, d1.last_user, d1.last_reason, d1.notes) == (
        "waived", "w2", "waived", "sue", "hardship", 3)
    assert d1.opened_recorded_at == T0 + timedelta(hours=1) and d1.assignee is None


def test_an_accounts_history_follows_each_event_with_what_the_ledger_emitted_because_of_it(
        store: LedgerStore) -> None:
    from events.types import DiscrepancyOpened

    def opened(did: str, cause: str) -> OutboxRow:
        ev = DiscrepancyOpened(
            event_id=f"{did}:opened", account_id="A1", effective_on=JAN, occurred_at=T0, source="benefits-ledger",
            causation_id=cause, discrepancy_id=did, kind="underpaid", coverage_month=JAN, expected_cents=1,
            actual_cents=0, cause_event_ids=(cause,), explanation="x", action="y", actor="member")
        return OutboxRow(event_id=ev.event_id, key="A1", body=encode(ev))

    batch = first_batch()
    later = T0 + timedelta(minutes=5)
    batch.archive[2] = archive_row(paid("A1"), 2, recorded_at=later)
    batch.archive.append(archive_row(enrolled("A2"), 3))
    batch.outbox = [opened("orphan", "not-archived"), opened("d1", "A1-pay-202601"),
                    OutboxRow(event_id="claim:x", key="A1", body=b"{}", stream=CLAIMS_STREAM)]
    batch.positions = [advance(None, 4, applied=4)]
    store.commit_batch(batch)
    history = store.account_history("A1")
    assert [(h.event_id, h.event_type, h.emitted) for h in history] == [
        ("A1-enr-1", "enrollment_changed", False), ("A1-bill-202601", "premium_billed", False),
        ("A1-pay-202601", "payment_received", False), ("d1:opened", "discrepancy_opened", True),
        ("orphan:opened", "discrepancy_opened", True)]
    assert history[3].recorded_at == later and history[4].recorded_at is None
    assert history[0].body == encode(enrolled("A1")) and history[3].effective_on == JAN
    assert [h.event_id for h in store.account_history("A1", limit=2)] == ["A1-enr-1", "A1-bill-202601"]
    assert store.account_history("nobody") == []


def test_event_status_tells_applied_from_dead_lettered_and_leaves_pending_out(store: LedgerStore) -> None:
    batch = first_batch()
    batch.dead_letters = [DeadLetterRow(log_id=LOG, topic=BILLING, partition=0, offset=9, event_id="bad-1",
                                        reason="amount moved", field="amount_cents", key=b"A1", raw=b"{}",
                                        recorded_at=T0)]
    store.commit_batch(batch)
    status = store.event_status(["A1-bill-202601", "bad-1", "still-pending"])
    assert set(status) == {"A1-bill-202601", "bad-1"}
    assert (status["A1-bill-202601"].state, status["A1-bill-202601"].account_id) == ("applied", "A1")
    assert (status["bad-1"].state, status["bad-1"].reason, status["bad-1"].field) == (
        "dead_lettered", "amount moved", "amount_cents")
    assert store.event_status([]) == {}


def test_agencies_and_accounts_count_accounts_open_discrepancies_and_what_is_owed(store: LedgerStore) -> None:
    store.commit_batch(_queue_batch())
    agencies = {a.agency_id: (a.accounts, a.open_discrepancies, a.outstanding_cents) for a in store.agencies()}
    assert agencies == {"AG1": (1, 1, 45_000), "AG2": (1, 1, 0), "AG3": (1, 1, 0), "AG4": (0, 1, 0)}
    rows = store.accounts()
    assert [(r.account_id, r.agency_id, r.balance_cents, r.open_discrepancies) for r in rows] == [
        ("A", "AG2", 0, 1), ("B", "AG1", 45_000, 1), ("U", None, 0, 1), ("payer:AG3", "AG3", 0, 1)]
    assert [r.account_id for r in store.accounts(prefix="pay")] == ["payer:AG3"]
    assert [r.account_id for r in store.accounts(agency_id="AG1")] == ["B"]
    assert [r.account_id for r in store.accounts(prefix="%")] == []
    assert len(store.accounts(limit=1)) == 1


def test_a_discrepancy_a_business_day_opened_follows_that_days_copy_on_the_accounts_partition(
        store: LedgerStore) -> None:
    from events.types import DayClosed, DiscrepancyOpened

    day = DayClosed(event_id="day-1", account_id="*", effective_on=FEB, occurred_at=T0, business_date=FEB)
    bill = billed("A1")
    batch = BatchWrite(
        archive=[archive_row(day, 0, partition=0, dedupe_key="day-1@p0"),
                 archive_row(bill, 0, partition=1, recorded_at=T0 + timedelta(minutes=1)),
                 archive_row(day, 1, partition=1, dedupe_key="day-1@p1", recorded_at=T0 + timedelta(minutes=2))],
        accounts={"A1": AccountState(account_id="A1", partition=1)},
        positions=[advance(None, 1, partition=0), advance(None, 2, partition=1)],
    )
    missing = DiscrepancyOpened(
        event_id="m1:opened", account_id="A1", effective_on=JAN, occurred_at=T0, source="benefits-ledger",
        causation_id="day-1", discrepancy_id="m1", kind="missing_payment", coverage_month=JAN, expected_cents=1,
        actual_cents=0, cause_event_ids=(bill.event_id, "day-1"), explanation="x", action="y", actor="member")
    batch.outbox = [OutboxRow(event_id=missing.event_id, key="A1", body=encode(missing))]
    store.commit_batch(batch)
    history = store.account_history("A1")
    assert [h.event_id for h in history] == [bill.event_id, "m1:opened"]
    assert history[1].recorded_at == T0 + timedelta(minutes=2)


# ---------------------------------------------------------------------------------------------
# Issue 12: a payment the ledger posts is delivered only when it comes back


def test_a_payment_the_ledger_posts_is_delivered_only_when_the_processor_sees_it_come_back(
    store: LedgerStore,
) -> None:
    from projections.model import PAYMENTS_STREAM

    derived = OutboxRow(event_id="cash-1:payment", key="A2", body=b'{"p":1}', stream=PAYMENTS_STREAM)
    finding = OutboxRow(event_id="d1:opened", key="A1", body=b"{}")
    store.commit_batch(BatchWrite(outbox=[finding, derived], positions=[advance(None, 1)]))
    assert [r for _, r in store.outbox_undelivered(10)] == [derived]
    pending = store.outbox_pending(10, log_id="log-A")
    assert [r for _, r in pending] == [finding, derived]

    store.mark_published([s for s, _ in pending], log_id="log-A")
    assert store.outbox_pending(10, log_id="log-A") == []
    assert store.outbox_pending(10) == []
    # published is not delivered: the broker may lose it before the processor reads it back
    assert [r for _, r in store.outbox_undelivered(10)] == [derived]
    # on another log (the broker lost its records) it is published again; the finding is not
    assert [r for _, r in store.outbox_pending(10, log_id="log-B")] == [derived]
    store.mark_published([s for s, r in pending if r == derived], log_id="log-B")
    assert store.outbox_pending(10, log_id="log-B") == []

    # it comes back: delivered, and never published again on any log
    store.commit_batch(BatchWrite(echoed=["cash-1:payment", "not-in-the-outbox", "d1:opened"],
                                  positions=[advance(1, 2)]))
    assert store.outbox_undelivered(10) == []
    assert store.outbox_pending(10, log_id="log-C") == []


def test_a_posted_payment_that_does_not_come_back_in_time_is_published_again(store: LedgerStore) -> None:
    from projections.model import PAYMENTS_STREAM

    derived = OutboxRow(event_id="cash-2:payment", key="A2", body=b"{}", stream=PAYMENTS_STREAM)
    store.commit_batch(BatchWrite(outbox=[derived], positions=[advance(None, 1)]))
    [(seq, _)] = store.outbox_pending(10, log_id="log-A")
    store.mark_published([seq], log_id="log-A")
    now = datetime.now(UTC)
    assert store.outbox_pending(10, log_id="log-A", republish_before=now - timedelta(hours=1)) == []
    assert [r for _, r in store.outbox_pending(10, log_id="log-A", republish_before=now + timedelta(seconds=5))] == [
        derived]
    store.mark_published([seq], log_id="log-A")  # published again: the clock starts again
    assert store.outbox_pending(10, log_id="log-A", republish_before=now - timedelta(seconds=1)) == []


def test_a_posted_payment_seen_back_before_the_relay_marked_it_is_not_published_again(store: LedgerStore) -> None:
    from projections.model import PAYMENTS_STREAM

    derived = OutboxRow(event_id="cash-3:payment", key="A2", body=b"{}", stream=PAYMENTS_STREAM)
    store.commit_batch(BatchWrite(outbox=[derived], positions=[advance(None, 1)]))
    [(seq, _)] = store.outbox_pending(10, log_id="log-A")
    store.commit_batch(BatchWrite(echoed=[derived.event_id], positions=[advance(1, 2)]))  # faster than the relay
    assert store.outbox_pending(10, log_id="log-A") == []
    store.mark_published([seq], log_id="log-A")
    assert store.outbox_pending(10, log_id="log-B") == [] and store.outbox_undelivered(10) == []


def test_payer_unapplied_for_returns_the_named_payers(store: LedgerStore) -> None:
    store.commit_batch(BatchWrite(payer_unapplied_delta={"P1": 500, "P2": -200, "P3": 0},
                                  positions=[advance(None, 1)]))
    assert store.payer_unapplied_for(["P1", "P2", "P9"]) == {"P1": 500, "P2": -200}
    assert store.payer_unapplied_for([]) == {}


def test_log_identity_topic_ids_are_recorded_once_and_a_new_log_retires_the_old(store: LedgerStore) -> None:
    assert store.current_log("cluster-1") == "cluster-1"  # no epoch yet: the cluster id itself
    assert store.log_topics("cluster-1") == {}
    store.record_log_topics("cluster-1", {"t.a": "id-a", "t.b": "id-b"})
    store.record_log_topics("cluster-1", {"t.a": "id-OTHER", "t.c": "id-c"})  # recorded ids never change
    assert store.log_topics("cluster-1") == {"t.a": "id-a", "t.b": "id-b", "t.c": "id-c"}

    assert store.start_new_log("cluster-1", "topic t.a replaced") == ("cluster-1", "cluster-1~2")
    assert store.current_log("cluster-1") == "cluster-1~2"
    assert store.log_topics("cluster-1~2") == {}
    assert store.start_new_log("cluster-1", "again") == ("cluster-1~2", "cluster-1~3")
    assert store.current_log("cluster-1") == "cluster-1~3"
    assert store.current_log("cluster-2") == "cluster-2"


def test_a_derived_index_that_no_longer_matches_the_state_fails_in_check_mode(store: LedgerStore) -> None:
    a1 = account("A1", month_state("A1", JAN, 45_000))
    assert a1.unpaid_months == {month_key(JAN)}  # built: billed, nothing applied
    a1.months[month_key(JAN)].payments.append(PaymentLine(
        payment_id="p1", amount_cents=45_000, payer_id="AG-1", method="payroll", trace_number=None,
        remittance_id=None, status=PAYMENT_APPLIED,
        event_id="e-p1"))  # paid, but the index was not told (month_changed)
    with pytest.raises(AssertionError, match="the index _unpaid_months"):
        store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": {month_key(JAN)}}))
    payer = _payer("R1")
    payer.remittances["R1"].header_event_id = "r-1"
    payer.book_changed("R1")
    assert payer.waiting_books == {"R1"}
    payer.remittances["R1"].judged = True  # judged, but the index was not told (book_changed)
    with pytest.raises(AssertionError, match="the index _waiting_books"):
        store.commit_batch(BatchWrite(accounts={payer.account_id: payer},
                                      dirty_months={payer.account_id: {"remittance:R1"}}))


def test_a_findings_index_that_no_longer_matches_the_findings_fails_in_check_mode(store: LedgerStore) -> None:
    a1 = account("A1", month_state("A1", JAN, 45_000), month_state("A1", FEB, 45_000))
    a1.put_open(_finding("d-jan", "missing_payment", JAN))
    assert a1.open_at(month_key(JAN)) == ("missing_payment|2026-01-01",) and a1.open_at(month_key(FEB)) == ()
    store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": set(a1.months)}))
    feb = _finding("d-feb", "underpaid", FEB)
    a1.open[feb.key] = feb  # opened past put_open: the index was not told
    with pytest.raises(AssertionError, match="the index _open_at"):
        store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": {month_key(FEB)}}))
    b1 = account("B1", month_state("B1", JAN, 45_000))
    dismissed = _finding("d-old", "underpaid", JAN, work_status="closed", suppress=True)
    b1.put_closed(dismissed)
    assert b1.closed_at(month_key(JAN)) == ("d-old",)
    del b1.closed["d-old"]  # reopened past pop_closed
    with pytest.raises(AssertionError, match="the index _closed_at"):
        store.commit_batch(BatchWrite(accounts={"B1": b1}, dirty_months={"B1": {month_key(JAN)}}))


def test_a_write_stores_only_the_findings_of_the_rows_it_names_and_the_header_those_about_no_row(
    store: LedgerStore,
) -> None:
    a1 = account("A1", month_state("A1", JAN, 45_000), month_state("A1", FEB, 45_000))
    store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": set(a1.months)}))
    for d in (_finding("d-feb", "underpaid", FEB), _finding("d-mar", "enrolled_not_billed", date(2026, 3, 1)),
              _finding("d-jan", "missing_payment", JAN)):
        a1.put_open(d)
    a1.put_closed(_finding("d-old", "underpaid", FEB, work_status="waived"))
    a1.pop_open("missing_payment|2026-01-01")  # opened and settled again in the same batch
    store.commit_batch(BatchWrite(accounts={"A1": a1}, dirty_months={"A1": {month_key(FEB)}}))
    assert list(_stored_header(store, "A1").open) == ["enrolled_not_billed|2026-03-01"]
    loaded = store.load_accounts(["A1"])["A1"]
    assert loaded.open == a1.open and loaded.closed == a1.closed
    assert loaded.open_at(month_key(FEB)) == ("underpaid|2026-02-01",)
    assert loaded.closed_at(month_key(FEB)) == ("d-old",)
    assert loaded.open_at(month_key(JAN)) == ()
