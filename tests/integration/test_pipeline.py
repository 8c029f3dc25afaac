"""The whole pipeline against the real broker (Tansu) and the real PostgreSQL.

Publisher -> input topics -> ProcessorLoop (one PostgreSQL transaction per batch) -> projections,
discrepancies, outbox -> Relay -> discrepancy topic; invalid records -> dead-letter topic.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from events import codec
from events.publisher import Publisher
from events.types import (
    BROADCAST_ACCOUNT,
    DISCREPANCY_KINDS,
    DiscrepancyAmountChanged,
    DiscrepancyOpened,
    DiscrepancyResolved,
    EnrollmentChanged,
    Event,
    PaymentReceived,
    PremiumBilled,
    RatePublished,
)
from processor.app import Ledger, open_ledger, run_services
from processor.embedded import EmbeddedBroker, EmbeddedPostgres
from processor.entrypoints.demo import CLAIM_DECISIONS, Program, generate, judge, read_claims, run_program
from processor.runtime import ProcessorLoop
from processor.settings import Settings, TopicSettings
from processor.topics import ensure_topics
from projections.model import DiscrepancyRow, LogTruncated
from tests.integration.support import consume_all

WAIT_S = 120.0


# ---------------------------------------------------------------------------------------------- helpers


def unique_topic_settings() -> TopicSettings:
    suffix = uuid.uuid4().hex[:12]
    defaults = TopicSettings()
    return TopicSettings(**{f: f"{getattr(defaults, f)}.{suffix}" for f in TopicSettings.model_fields})


def derived_count(dsn: str) -> int:
    """Events the ledger posted itself so far (outbox rows for the payments topic: a cash application's
    payment, a remittance line's report to its payer), which come back as records."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE stream = 'payments'").fetchone()
    assert row is not None
    return int(row[0])


async def process_until(ledger: Ledger, received: int, *, relay: bool = True) -> None:
    """Run processor (and relay) until the store has received ``received`` records and, with the relay,
    the events the ledger posts itself on top of them; drain the outbox."""
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(ledger, stop, relay=relay))
    watcher = ledger.store()
    deadline = time.monotonic() + WAIT_S

    async def wanted() -> int:
        return received + (await asyncio.to_thread(derived_count, ledger.dsn) if relay else 0)

    try:
        while True:
            while (await asyncio.to_thread(watcher.counts)).received < await wanted():
                if services.done():
                    services.result()
                    raise AssertionError("the services stopped before catching up")
                assert time.monotonic() < deadline, f"processor did not reach {received} records in {WAIT_S} s"
                await asyncio.sleep(0.05)
            while relay and await asyncio.to_thread(watcher.outbox_pending, 1):
                assert not services.done(), "the services stopped before draining the outbox"
                assert time.monotonic() < deadline, "the relay did not drain the outbox"
                await asyncio.sleep(0.05)
            if (await asyncio.to_thread(watcher.counts)).received >= await wanted():
                break  # nothing the relay sent is still on its way back
    finally:
        stop.set()
        await services


def comparable(row: DiscrepancyRow) -> tuple[Any, ...]:
    """A discrepancy row without its recorded-at timestamps."""
    return (row.discrepancy_id, row.kind, row.account_id, row.coverage_month, row.payer_id,
            row.expected_cents, row.actual_cents, tuple(row.cause_event_ids), row.explanation, row.action,
            row.actor, row.status, row.opened_by, row.resolved_by)


def output_event_ids(rows: list[DiscrepancyRow]) -> Counter[str]:
    """The discrepancy-topic event ids a set of discrepancy rows must have produced."""
    ids = Counter(f"{r.discrepancy_id}:opened" for r in rows)
    ids.update(f"{r.discrepancy_id}:resolved" for r in rows if r.status == "resolved")
    return ids


T0 = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)
JAN = date(2026, 1, 1)


# ----------------------------------------------------------------------------- the demo program, once


@dataclass
class DemoRun:
    settings: Settings
    bootstrap: str
    dsn: str
    program: Program
    published: int
    ledger: Ledger


@pytest.fixture(scope="module")
def demo_run(broker: EmbeddedBroker, pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[DemoRun]:
    """generate(members=40, months=4, seed=3) published and folded by run_program, once per module."""
    name = f"test_pipeline_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = pg_server.dsn_for(name)
    settings = Settings(
        kafka_bootstrap_servers=broker.bootstrap, database_url=dsn, topics=unique_topic_settings(),
        partitions=4, data_dir=tmp_path_factory.mktemp("demo-run"),
        consumer_group=f"pipeline-{uuid.uuid4().hex[:8]}",
    )
    program = generate(members=40, months=4, seed=3)
    try:
        with open_ledger(settings) as ledger:
            published = asyncio.run(run_program(ledger, program))
            yield DemoRun(settings, ledger.bootstrap, dsn, program, published, ledger)
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_demo_program_detects_every_injected_discrepancy_and_nothing_else(demo_run: DemoRun) -> None:
    rows = demo_run.ledger.store().discrepancies(limit=10**6)
    detected = Counter((r.kind, r.account_id, r.coverage_month, r.status) for r in rows)
    missed = demo_run.program.expected_rows - detected
    spurious = detected - demo_run.program.expected_rows
    assert not missed, f"missed (or in another status): {sorted(missed, key=str)}"
    assert not spurious, f"spurious (or in another status): {sorted(spurious, key=str)}"
    assert {r.kind for r in rows} <= set(DISCREPANCY_KINDS)
    # the cash application resolved the misdirected line and the member's missing payment; a returned
    # refund reopened its refund_due under a new id
    assert any(k == "unmatched_payment" and s == "resolved" for k, _, _, s in detected)
    assert any(k == "missing_payment" and s == "resolved" for k, _, _, s in detected)
    reopened = [key for key, n in Counter((r.kind, r.account_id, r.coverage_month) for r in rows).items() if n > 1]
    assert reopened and {k for k, _, _ in reopened} == {"refund_due"}


def test_demo_program_claims_are_adjudicated_as_the_generator_expects(demo_run: DemoRun) -> None:
    adjudications = read_claims(demo_run.bootstrap, demo_run.settings.topics.claims)
    store = demo_run.ledger.store()
    verdict = judge(demo_run.program, store.discrepancies(limit=10**6), adjudications, store.member_months(limit=10**6),
                    unapplied=store.payer_unapplied())
    assert verdict.claims_mismatched == 0, verdict.mismatch_examples
    # one adjudication per claim, and one per later payment of a pending dependent-care remainder
    assert verdict.claims_adjudicated == len(demo_run.program.claims)
    assert len(adjudications) == len(demo_run.program.claims) + verdict.claim_payments > len(demo_run.program.claims)
    assert all(verdict.claims_by_decision[d] > 0 for d in CLAIM_DECISIONS)
    assert (verdict.missed, verdict.spurious, verdict.status_mismatched) == (0, 0, 0)
    # every member-month and every payer's unapplied cash to the cent, read back from PostgreSQL, and
    # every finding's amounts
    assert verdict.balances_mismatched == 0 and verdict.months_checked > 0, verdict.balance_examples
    assert verdict.unapplied_mismatched == 0 and verdict.payers_checked > 0, verdict.unapplied_examples
    assert verdict.amounts_mismatched == 0, verdict.amount_examples


def test_demo_program_counts_add_up_and_archive_holds_every_applied_event(demo_run: DemoRun) -> None:
    store = demo_run.ledger.store()
    counts = store.counts()
    program = demo_run.program
    # the ledger posts one payment of its own for each cash application, and reports each remittance line
    # to its payer's account: received that many records more
    assert program.derived_payments >= 1 and program.derived_lines >= 1
    assert counts.received == demo_run.published + program.derived
    assert counts.duplicates == len(program.exact_duplicates)
    assert counts.dead_lettered == len(program.raw_records)
    assert counts.applied == counts.received - counts.duplicates - counts.dead_lettered
    assert counts.received == counts.applied + counts.duplicates + counts.dead_lettered
    assert store.archive_count() == counts.applied
    summary = store.summary()
    assert summary.counts == counts
    assert summary.accounts == program.accounts
    assert summary.members == program.members
    dead = store.dead_letters()
    assert sorted(d.raw for d in dead) == sorted(v for _, _, v in program.raw_records if v is not None)


def _account_events(program: Program, account_id: str) -> list[Event]:
    events = [e for _, phase in program.phases for e in phase if e.account_id == account_id]
    return events + [e for e in program.exact_duplicates if e.account_id == account_id]


def test_balance_of_a_clean_account_matches_what_was_published_to_the_cent(demo_run: DemoRun) -> None:
    program = demo_run.program
    troubled = {a for _, a, _ in program.expected} | {  # and payments naming no month, placed by the ledger
        e.account_id for _, evs in program.phases for e in evs
        if isinstance(e, PaymentReceived) and e.coverage_month is None}
    resent = [e.account_id for e in program.exact_duplicates]
    candidates = [a for a in resent if a not in troubled] + sorted(
        {e.account_id for _, evs in program.phases for e in evs if isinstance(e, PremiumBilled)} - troubled
    )
    assert candidates, "the program has no account without an injected discrepancy"
    account_id = candidates[0]
    events = _account_events(program, account_id)
    seen: set[str] = set()
    billed: Counter[date] = Counter()
    paid: Counter[date] = Counter()
    for e in events:
        if e.event_id in seen:
            continue  # the exact duplicate is published, but must not count twice
        seen.add(e.event_id)
        if isinstance(e, PremiumBilled):
            billed[e.coverage_month] += e.amount_cents
        elif isinstance(e, PaymentReceived):
            assert e.coverage_month is not None
            paid[e.coverage_month] += e.amount_cents
    assert len(billed) >= 2, "pick an account billed for several months"

    balance = demo_run.ledger.store().balance(account_id)
    assert balance is not None
    months = {m.coverage_month: m for m in balance.months}
    assert set(months) == set(billed) | set(paid)
    for month, row in months.items():
        assert row.billed_cents == billed[month], month
        assert row.paid_cents == paid[month], month
        assert row.adjusted_cents == 0
        assert row.unapplied_cents == 0
        assert row.balance_cents == billed[month] - paid[month]
        assert row.expected_cents == billed[month], "a clean account is billed exactly the rate"
    assert balance.balance_cents == sum(billed.values()) - sum(paid.values())
    assert balance.open_discrepancies == []
    assert {c.member_id for c in balance.coverages} >= {account_id}


def test_relay_publishes_every_outbox_event_to_the_discrepancy_topic(demo_run: DemoRun) -> None:
    rows = demo_run.ledger.store().discrepancies(limit=10**6)
    assert rows, "the demo program must produce discrepancies"
    assert not demo_run.ledger.store().outbox_pending(1)
    messages = consume_all(demo_run.bootstrap, demo_run.settings.topics.discrepancies)
    by_id: dict[str, DiscrepancyRow] = {r.discrepancy_id: r for r in rows}
    published: Counter[str] = Counter()
    for m in messages:
        event = codec.decode_output(m.value)
        assert isinstance(event, DiscrepancyOpened | DiscrepancyAmountChanged | DiscrepancyResolved)
        published[event.event_id] += 1
        assert m.key == event.account_id.encode(), "discrepancy events are keyed by account_id"
        assert dict(m.headers)["event_id"] == event.event_id.encode()
        row = by_id[event.discrepancy_id]
        assert (event.kind, event.account_id, event.coverage_month) == (
            row.kind, row.account_id, row.coverage_month)
        if isinstance(event, DiscrepancyOpened):
            assert event.event_id == f"{row.discrepancy_id}:opened"
            assert event.causation_id == row.opened_by
        elif isinstance(event, DiscrepancyAmountChanged):
            assert event.event_id == f"{row.discrepancy_id}:changed:{event.causation_id}"
            assert event.causation_id in event.changing_event_ids  # in the row's causes: the test below
        else:
            assert event.event_id == f"{row.discrepancy_id}:resolved"
            assert event.causation_id == row.resolved_by
    with psycopg.connect(demo_run.ledger.dsn) as conn:
        outbox = Counter(str(r[0]) for r in conn.execute("SELECT event_id FROM outbox WHERE stream = 'discrepancies'"))
    assert published == outbox, "each outbox event exactly once on the discrepancy topic"
    assert not output_event_ids(rows) - published, "every opening and resolution was published"


def test_the_event_that_moved_a_discrepancys_amounts_is_among_its_causes(demo_run: DemoRun) -> None:
    by_id = {r.discrepancy_id: r for r in demo_run.ledger.store().discrepancies(limit=10**6)}
    changed = [e for m in consume_all(demo_run.bootstrap, demo_run.settings.topics.discrepancies)
               if isinstance(e := codec.decode_output(m.value), DiscrepancyAmountChanged)]
    assert changed
    assert [e.event_id for e in changed if e.causation_id not in by_id[e.discrepancy_id].cause_event_ids] == []


# ------------------------------------------------------------------------- duplicates and bad records


def _events_for(account_id: str) -> tuple[RatePublished, EnrollmentChanged, PremiumBilled, PaymentReceived]:
    rate = RatePublished(
        event_id=f"{account_id}-rate", account_id=BROADCAST_ACCOUNT, effective_on=JAN, occurred_at=T0,
        source="rates", rate_id="R-2026-UMP-EMP", plan="UMP-CLASSIC", tier="EMP", month_from=JAN,
        total_cents=78_412, employee_cents=11_762, employer_cents=66_650,
    )
    enroll = EnrollmentChanged(
        event_id=f"{account_id}-enr", account_id=account_id, effective_on=JAN, occurred_at=T0,
        source="hr-system", member_id=account_id, plan="UMP-CLASSIC", coverage_line="health", tier="EMP",
        action="add", benefit_begin=JAN, agency_id="AG-001",
    )
    bill = PremiumBilled(
        event_id=f"{account_id}-bill", account_id=account_id, effective_on=JAN, occurred_at=T0,
        source="billing-system", bill_id=f"B202601-{account_id}", coverage_month=JAN, plan="UMP-CLASSIC",
        tier="EMP", amount_cents=78_412, due_on=JAN, agency_id="AG-001",
    )
    pay = PaymentReceived(
        event_id=f"{account_id}-pay", account_id=account_id, effective_on=date(2026, 1, 5), occurred_at=T0,
        source="bank-820", payment_id=f"P202601-{account_id}", coverage_month=JAN, amount_cents=78_412,
        method="payroll", payer_id="AG-001", trace_number="TRN-1",
    )
    return rate, enroll, bill, pay


def test_duplicates_and_invalid_records_end_in_the_right_place(
    settings_factory: Callable[..., Settings],
) -> None:
    import msgspec

    settings = settings_factory(consumer_group=f"dup-{uuid.uuid4().hex[:8]}")
    topics = settings.topics
    account = f"M-DUP-{uuid.uuid4().hex[:6]}"
    rate, enroll, bill, pay = _events_for(account)
    conflicting = msgspec.structs.replace(pay, amount_cents=70_000)  # same event_id, other body
    garbage = b"\x00\xff{definitely not an event"
    wrong_key = PaymentReceived(
        event_id=f"{account}-pay-2", account_id=account, effective_on=date(2026, 1, 6), occurred_at=T0,
        source="bank-820", payment_id=f"P202601-{account}-2", coverage_month=JAN, amount_cents=100,
        method="payroll", payer_id="AG-001",
    )
    wrong_topic = msgspec.structs.replace(bill, event_id=f"{account}-bill-2", bill_id=f"B202601-{account}-2")
    impostor = b"SOMEONE-ELSE"

    with open_ledger(settings) as ledger:
        pub = ledger.publisher()
        try:
            first = pub.publish([rate, enroll, bill, pay])
            pub.flush()
            again = pub.publish([rate, enroll, bill, pay])  # exact duplicates
            pub.flush()
            pub.send_raw(topics.payments, value=codec.encode(conflicting), key=account.encode())
            pub.send_raw(topics.payments, value=garbage, key=account.encode())
            pub.send_raw(topics.payments, value=codec.encode(wrong_key), key=impostor)
            pub.send_raw(topics.payments, value=codec.encode(wrong_topic), key=account.encode())
            pub.flush()
            sent = pub.records_sent
        finally:
            pub.close()
        assert first == again == settings.partitions + 3  # the rate goes once to every partition
        asyncio.run(process_until(ledger, sent, relay=False))
        store = ledger.store()

        counts = store.counts()
        assert counts.received == sent == 2 * first + 4
        assert (counts.applied, counts.duplicates, counts.dead_lettered) == (first, first, 4)
        assert counts.received == counts.applied + counts.duplicates + counts.dead_lettered
        assert store.archive_count() == first

        balance = store.balance(account)
        assert balance is not None
        [month] = balance.months
        assert (month.billed_cents, month.paid_cents, month.balance_cents) == (78_412, 78_412, 0)

        rows = {d.raw: d for d in store.dead_letters()}
        assert set(rows) == {codec.encode(conflicting), garbage, codec.encode(wrong_key),
                             codec.encode(wrong_topic)}
        conflict_row = rows[codec.encode(conflicting)]
        assert conflict_row.field == "event_id" and conflict_row.event_id == pay.event_id
        assert "conflicting duplicate" in conflict_row.reason
        assert rows[garbage].reason.startswith("undecodable")
        assert rows[garbage].event_id is None
        key_row = rows[codec.encode(wrong_key)]
        assert key_row.field == "account_id"
        assert "SOMEONE-ELSE" in key_row.reason and account in key_row.reason
        assert key_row.key == impostor
        topic_row = rows[codec.encode(wrong_topic)]
        assert topic_row.field == "type"
        assert "premium_billed" in topic_row.reason and topics.payments in topic_row.reason
        assert all(d.topic == topics.payments for d in rows.values())

    letters = consume_all(settings.kafka_bootstrap_servers or "", topics.dead_letter)
    assert len(letters) == 4, "each rejected record once on the dead-letter topic"
    for m in letters:
        row = rows[m.value]  # the original bytes, untouched
        headers = dict(m.headers)
        assert headers["reason"].decode() == row.reason
        assert m.key == row.key
        assert headers["source_topic"].decode() == row.topic
        assert int(headers["source_partition"]) == row.partition
        assert int(headers["source_offset"]) == row.offset
        if row.field:
            assert headers["field"].decode() == row.field


# ------------------------------------------------------------------------------------ log truncation


def _enrollments(prefix: str, n: int) -> list[EnrollmentChanged]:
    return [
        EnrollmentChanged(
            event_id=f"{prefix}-enr-{i}", account_id=f"{prefix}-{i:03d}", effective_on=JAN, occurred_at=T0,
            source="hr-system", member_id=f"{prefix}-{i:03d}", plan="DELTA-PPO", coverage_line="dental",
            tier="EMP", action="add", benefit_begin=JAN, agency_id="AG-002",
        )
        for i in range(n)
    ]


async def _apply_all(loop: ProcessorLoop, watcher: Any, target: int) -> None:
    await loop.start()
    deadline = time.monotonic() + WAIT_S
    try:
        while (await asyncio.to_thread(watcher.counts)).received < target:
            assert time.monotonic() < deadline, f"did not apply {target} records"
            await loop.run_once()
    finally:
        await loop.stop()


async def _run_until_error(loop: ProcessorLoop) -> BaseException:
    from processor.stops import DataIntegrityStop

    try:  # another cluster at the address is caught before anything is read (processor/logid.py)
        await loop.start()
    except DataIntegrityStop as exc:
        await loop.stop()
        return exc
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                applied = await loop.run_once()
            except LogTruncated as exc:
                return exc
            assert applied == 0, "records of a truncated log were applied"
        raise AssertionError("the processor never noticed that the log ends before its stored positions")
    finally:
        await loop.stop()


def _publish(bootstrap: str, topics: TopicSettings, events: list[Event]) -> int:
    pub = Publisher(bootstrap, topics, 4)
    try:
        pub.publish(events)
        pub.flush()
        return pub.records_sent
    finally:
        pub.close()


def test_processor_refuses_a_log_that_ends_before_its_stored_positions(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(consumer_group=f"trunc-{uuid.uuid4().hex[:8]}")
    log_x = f"log-x-{uuid.uuid4().hex[:6]}"
    with open_ledger(settings) as ledger:
        watcher = ledger.store()
        sent_a = _publish(ledger.bootstrap, settings.topics, _enrollments("TA", 16))
        loop_a = dataclasses.replace(ledger, log_id=log_x).processor()
        asyncio.run(_apply_all(loop_a, watcher, sent_a))
        stored = watcher.positions(log_x)
        assert sum(stored.values()) == sent_a == 16
        assert max(stored.values()) >= 2
        before = watcher.counts()
        archived = watcher.archive_count()

        with EmbeddedBroker() as broker_b:
            ensure_topics(broker_b.bootstrap, settings)
            new_events = _enrollments("TB", 2)
            sent_b = _publish(broker_b.bootstrap, settings.topics, new_events)
            assert sent_b < sent_a

            # The same log id on a broker that lost the records: stop, apply nothing.
            loop_b = dataclasses.replace(ledger, bootstrap=broker_b.bootstrap, log_id=log_x).processor()
            error = asyncio.run(_run_until_error(loop_b))
            message = str(error)
            assert settings.topics.enrollment in message or "log" in message
            assert "offset" in message or "position" in message
            assert "restarted" in message or "lost" in message or "truncat" in message.lower()
            assert watcher.counts() == before
            assert watcher.archive_count() == archived
            assert watcher.positions(log_x) == stored

            # B's own cluster id is a new log: it starts at 0 and applies B's records.
            assert broker_b.cluster_id and broker_b.cluster_id != ledger.log_id
            # (a fresh consumer group only spares the test Tansu's slow re-join of the group just left)
            fresh = settings.model_copy(update={"consumer_group": f"{settings.consumer_group}-b"})
            loop_new = dataclasses.replace(ledger, settings=fresh, bootstrap=broker_b.bootstrap,
                                           log_id=broker_b.cluster_id, cluster_id=broker_b.cluster_id).processor()
            asyncio.run(_apply_all(loop_new, watcher, before.received + sent_b))

        after = watcher.counts()
        assert after.applied == before.applied + sent_b
        assert (after.duplicates, after.dead_lettered) == (before.duplicates, before.dead_lettered)
        assert watcher.archive_count() == archived + sent_b
        new_positions = watcher.positions(broker_b.cluster_id)
        assert sum(new_positions.values()) == sent_b
        assert all(topic == settings.topics.enrollment for topic, _ in new_positions)
        assert watcher.positions(log_x) == stored
        for e in new_events:
            assert watcher.balance(e.account_id) is not None
