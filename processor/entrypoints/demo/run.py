"""Running the demo on a live stack, as a client of the composition root (processor/app.py): publish
the program as upstream systems would, wait until the ledger has taken all of it, read its books back
(the discrepancy and member_month tables through the store, the FSA adjudications from the claims
topic) and judge them against the oracle. Side effects live here only."""

from __future__ import annotations

import asyncio
import time as _time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from events import codec
from events.types import (
    BillingCycleClosed,
    CashApplied,
    DayClosed,
    Event,
    FsaClaimAdjudicated,
    PaymentReceived,
    PaymentReversed,
    RefundIssued,
    RefundReturned,
    RemittanceReceived,
)
from processor.app import open_ledger, run_services
from processor.entrypoints.demo.model import LEDGER, PAYER_PREFIX
from processor.entrypoints.demo.oracle import judge
from processor.entrypoints.demo.program import generate
from processor.entrypoints.demo.records import Program

DEMO_DATABASE = "benefits_ledger_demo"
ROWS_MAX = 10**8  # discrepancy and member-month rows read back at most (far above any demo size)


def read_claims(bootstrap: str, topic: str, timeout_s: float = 60.0, **client: Any) -> list[FsaClaimAdjudicated]:
    """Every adjudication on the claims topic, read from the beginning to the high-water mark of each
    partition as a fetch reports it (Tansu's end_offsets is not reliable). ``client``: more KafkaConsumer
    options (TLS and SASL: processor.kafka_clients.kafka_python_options)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **client)
    try:
        deadline = _time.monotonic() + timeout_s
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            if _time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} has no partitions")
            _time.sleep(0.2)
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[FsaClaimAdjudicated] = []
        while True:
            if _time.monotonic() > deadline:
                raise RuntimeError(f"reading {topic} did not reach its end in {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=500, max_records=20_000).values():
                for r in records:
                    event = codec.decode_output(r.value)
                    if isinstance(event, FsaClaimAdjudicated):
                        out.append(event)
            highwater = [consumer.highwater(tp) for tp in tps]
            if all(hw is not None and consumer.position(tp) >= hw for tp, hw in zip(tps, highwater, strict=True)):
                return out
    finally:
        consumer.close()



@dataclass
class DemoReport:
    members: int
    accounts: int
    months: int
    events_generated: int
    events_published: int
    events_applied: int
    events_duplicate: int
    events_dead_lettered: int
    events_derived: int  # what the ledger posted itself: received = published + derived
    remittance_lines_reported: int  # of those, remittance_line_posted (the rest: cash applications' payments)
    discrepancies_expected: int
    discrepancies_detected: int
    missed: int
    spurious: int
    missed_examples: list[str]
    spurious_examples: list[str]
    discrepancies_by_kind: dict[str, int]
    discrepancies_by_status: dict[str, int]
    status_mismatched: int
    discrepancy_events_published: int
    claims_expected: int
    claims_adjudicated: int
    claims_by_decision: dict[str, int]
    claims_mismatched: int
    claim_payments: int  # later adjudications paying part of a pending dependent-care claim
    mismatch_examples: list[str]
    discrepancy_amounts_checked: int  # discrepancy rows whose amounts the oracle compared
    amounts_mismatched: int  # rows stating other cents than the oracle (retroactive: or another before/after)
    amount_examples: list[str]
    amounts_mismatched_by_kind: dict[str, int]
    member_months_checked: int
    balances_mismatched: int  # member-months missing, unexpected, or off by a cent in any figure
    balance_examples: list[str]
    payers_checked: int  # payers with unapplied cash, in the ledger's books or the oracle's
    unapplied_mismatched: int  # payers whose unapplied cash differs from the oracle's
    unapplied_examples: list[str]
    proration: str  # whole_month | daily: how the program and the ledger price a month
    cash_applications: int
    payments_reversed: int
    refunds_issued: int
    refunds_returned: int
    coverage_months: int
    billed_cents: int
    paid_cents: int
    outstanding_cents: int
    credits_cents: int
    unapplied_cents: int
    counts_add_up: bool
    events_per_second: float
    elapsed_seconds: float
    database: str

    def ok(self) -> bool:
        return (self.missed == 0 and self.spurious == 0 and self.status_mismatched == 0
                and self.claims_mismatched == 0 and self.amounts_mismatched == 0 and self.balances_mismatched == 0
                and self.unapplied_mismatched == 0 and self.counts_add_up)


STALL_S = 60.0  # publishing done, nothing received and nothing left in the outbox for this long: give up
POLL_S = 0.05


def control_last(events: list[Event]) -> list[list[Event]]:
    """The events in order, each business day or billing cycle on its own, after everything before it
    was flushed to the broker."""
    runs: list[list[Event]] = [[]]
    for e in events:
        if isinstance(e, DayClosed | BillingCycleClosed):
            runs += [[e], []]
        else:
            runs[-1].append(e)
    return [r for r in runs if r]


def waits(program: Program, lines_days: int) -> dict[int, list[str]]:
    """Where the publisher waits on the ledger: before a phase holding business days, until the line
    reports (remittance_line_posted, event id ``<line's event id>:posted``) of every remittance its first
    day may judge are folded: those whose lines' window (payment date + ``lines_days``) ended before it.
    By phase index, the reports' event ids."""
    lines: dict[tuple[str, str], list[str]] = {}  # (payer account, remittance id) -> line event ids
    due: dict[tuple[str, str], date] = {}
    out: dict[int, list[str]] = {}
    for i, (_name, events) in enumerate(program.phases):
        days = [e.business_date for e in events if isinstance(e, DayClosed)]
        if days:
            ripe = [k for k, d in due.items() if d < min(days)]
            reports = [f"{event_id}:posted" for k in ripe for event_id in lines.pop(k, [])]
            for k in ripe:
                del due[k]
            if reports:
                out[i] = reports
        for e in events:
            if isinstance(e, PaymentReceived) and e.remittance_id is not None and e.source != LEDGER and (
                    not e.account_id.startswith(PAYER_PREFIX)):
                lines.setdefault((PAYER_PREFIX + e.payer_id, e.remittance_id), []).append(e.event_id)
            elif isinstance(e, RemittanceReceived):
                due[(e.account_id, e.remittance_id)] = e.payment_date + timedelta(days=lines_days)
    return out


async def run_program(ledger: Any, program: Program, progress: Callable[[int], None] | None = None) -> int:
    """Publish the whole program as upstream systems would (in business order) and wait until the
    processor has taken every record, those the ledger posts itself included, and the relay has drained
    the outbox. Returns the records published.

    The processor folds the input topics of a partition in timestamp order (processor/merge.py), so
    bills never overtake the enrollment they depend on, nor a business day the payments before it; the
    publisher sends a business day or a billing cycle only once everything before it is in the broker
    (flushed), even if its own sending is slowed (it shares the process and its interpreter lock with
    the processor and the relay). What the ledger posts itself goes through the outbox and the relay,
    so it lands after whatever was published meanwhile. A cash application's payment may land anywhere
    among the later records: the program is built so that its outcome does not depend on where. A
    remittance, though, is judged by the lines the ledger reported to its payer's account
    (remittance_line_posted), once all are in or on the first business day after its lines' window: as
    operations close a day once the day's work is in, a business day is published only once the
    processor has folded the line reports of every remittance that day may judge (``waits``). The
    program pays remittances two days before the month ends, so that day is the next month's last and
    the publisher runs up to a month ahead of the processor.

    The processor therefore works close to the head of the log, where today's merge may fold a record
    ahead of one of another topic published before it: it trusts a topic's high-water mark from the
    last fetch of it, which the consumer does not renew while it still holds fetched records of that
    topic (issue reported with the demo's branch). The flushes keep the publisher's own sending in order.
    """
    topics = ledger.settings.topics
    stop = asyncio.Event()
    services = asyncio.create_task(run_services(ledger, stop))
    watcher = ledger.store()
    publisher = ledger.publisher()
    plan = waits(program, ledger.settings.plan.remittance_lines_days)

    def check() -> None:
        if services.done():
            services.result()  # re-raise the processor's error
            raise RuntimeError("the processor stopped before catching up")

    async def archived(event_ids: list[str], what: str) -> None:
        """Until the processor has folded these events (archived under their ids)."""
        waiting, since = list(event_ids), _time.monotonic()
        while waiting:
            check()
            found = await asyncio.to_thread(watcher.find_events, waiting)
            waiting = [k for k in waiting if k not in found]
            if waiting and _time.monotonic() - since > STALL_S:
                raise RuntimeError(f"the ledger did not fold {len(waiting)} {what} in {STALL_S:.0f} s")
            if waiting:
                await asyncio.sleep(POLL_S)

    async def publish_all() -> None:
        for i, (_name, events) in enumerate(program.phases):
            if i in plan:
                await asyncio.to_thread(publisher.flush)
                await archived(plan[i], "remittance line reports")
            extra = program.exact_duplicates if i == len(program.phases) // 2 else []
            for run in control_last([*events, *extra]):
                if isinstance(run[0], DayClosed | BillingCycleClosed):
                    await asyncio.to_thread(publisher.flush)  # everything before it is in the broker
                await asyncio.to_thread(publisher.publish, run)
            if i == 1:
                for topic_key, key, value in program.raw_records:
                    publisher.send_raw(getattr(topics, topic_key), value=value, key=key)
        await asyncio.to_thread(publisher.flush)

    sending = asyncio.create_task(publish_all())
    try:
        last, since = -1, _time.monotonic()
        while True:
            check()
            received = (await asyncio.to_thread(watcher.counts)).received
            if progress is not None:
                progress(received)
            if sending.done():
                sending.result()
                wanted = publisher.records_sent + program.derived
                if received >= wanted:
                    break
                if received != last:
                    last, since = received, _time.monotonic()
                elif _time.monotonic() - since > STALL_S and not await asyncio.to_thread(watcher.outbox_pending, 1):
                    raise RuntimeError(f"received {received} of {wanted} records ({publisher.records_sent} published,"
                                       f" {program.derived} posted by the ledger) and nothing moved for"
                                       f" {STALL_S:.0f} s")
            await asyncio.sleep(POLL_S)
        while await asyncio.to_thread(watcher.outbox_pending, 1):
            check()
            await asyncio.sleep(POLL_S)
    finally:
        if not sending.done():
            sending.cancel()  # the processor stopped (or Ctrl-C) while the publisher waited on it
        stop.set()
        await services
        publisher.close()
    return publisher.records_sent


def run_demo(
    settings: Any, *, members: int, months: int, seed: int, proration: str | None = None,
    progress: Callable[[int], None] | None = None, on_start: Callable[[Program], None] | None = None,
    database: str = DEMO_DATABASE, then: Callable[[Any, DemoReport], None] | None = None,
) -> DemoReport:
    """Generate, publish, fold and compare with what was injected and what the oracle computed;
    everything started is stopped. ``proration`` (whole_month, daily) overrides the plan's for this run:
    the program and the ledger price by it. ``database`` is dropped and recreated (default
    benefits_ledger_demo). ``then`` runs with the ledger and the report before the stack stops
    (``demo --serve`` serves the web app there)."""
    if proration is not None:
        settings = settings.model_copy(update={"plan": settings.plan.model_copy(update={"proration": proration})})
    program = generate(members, months, seed, plan=settings.plan)
    if on_start is not None:
        on_start(program)
    with open_ledger(settings, database=database, reset_database=True) as ledger:
        started = _time.perf_counter()
        published = asyncio.run(run_program(ledger, program, progress))
        elapsed = _time.perf_counter() - started
        store = ledger.store()
        summary = store.summary()
        rows = store.discrepancies(limit=ROWS_MAX)
        from processor.kafka_clients import kafka_python_options

        adjudications = read_claims(ledger.bootstrap, ledger.settings.topics.claims,
                                    **kafka_python_options(ledger.settings))
        verdict = judge(program, rows, adjudications, store.member_months(limit=ROWS_MAX),
                        unapplied=store.payer_unapplied())
        counts = summary.counts
        events = [e for _, phase in program.phases for e in phase]
        report = DemoReport(
            members=summary.members, accounts=summary.accounts, months=months,
            events_generated=program.events, events_published=published,
            events_applied=counts.applied, events_duplicate=counts.duplicates,
            events_dead_lettered=counts.dead_lettered, events_derived=program.derived,
            remittance_lines_reported=program.derived_lines,
            discrepancies_expected=sum(program.expected_rows.values()), discrepancies_detected=len(rows),
            missed=verdict.missed, spurious=verdict.spurious,
            missed_examples=verdict.missed_examples, spurious_examples=verdict.spurious_examples,
            discrepancies_by_kind=dict(summary.discrepancies_opened_by_kind),
            discrepancies_by_status=dict(sorted(Counter(d.status for d in rows).items())),
            status_mismatched=verdict.status_mismatched,
            # the outbox is drained before the report: every opened and resolved event was published
            discrepancy_events_published=len(rows) + sum(1 for d in rows if d.status == "resolved"),
            claims_expected=len(program.claims), claims_adjudicated=verdict.claims_adjudicated,
            claims_by_decision=verdict.claims_by_decision, claims_mismatched=verdict.claims_mismatched,
            claim_payments=verdict.claim_payments,
            mismatch_examples=verdict.mismatch_examples,
            discrepancy_amounts_checked=verdict.amounts_checked, amounts_mismatched=verdict.amounts_mismatched,
            amount_examples=verdict.amount_examples, amounts_mismatched_by_kind=verdict.amounts_mismatched_by_kind,
            member_months_checked=verdict.months_checked,
            balances_mismatched=verdict.balances_mismatched, balance_examples=verdict.balance_examples,
            payers_checked=verdict.payers_checked, unapplied_mismatched=verdict.unapplied_mismatched,
            unapplied_examples=verdict.unapplied_examples,
            proration=settings.plan.proration,
            cash_applications=sum(1 for e in events if isinstance(e, CashApplied)),
            payments_reversed=sum(1 for e in events if isinstance(e, PaymentReversed)),
            refunds_issued=sum(1 for e in events if isinstance(e, RefundIssued)),
            refunds_returned=sum(1 for e in events if isinstance(e, RefundReturned)),
            coverage_months=summary.coverage_months, billed_cents=summary.billed_cents,
            paid_cents=summary.paid_cents, outstanding_cents=summary.outstanding_cents,
            credits_cents=summary.credits_cents, unapplied_cents=summary.unapplied_cents,
            counts_add_up=counts.received == published + program.derived
            and counts.received == counts.applied + counts.duplicates + counts.dead_lettered,
            events_per_second=round(published / elapsed, 1), elapsed_seconds=round(elapsed, 2),
            database=database,
        )
        if then is not None:
            then(ledger, report)
    return report
