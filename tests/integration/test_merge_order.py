"""The merge of the input topics against the real broker: a business day is folded after a payment made
before it, even when the payment landed on its topic behind a record made after the business day.

Two producers write the payments topic in production (a loader, and the ledger's relay posting
remittance line reports); their deliveries race. Here the race is staged with explicit CreateTimes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import date

import psycopg
from kafka import KafkaProducer

from events import codec
from events.types import BROADCAST_ACCOUNT, DayClosed, PaymentReceived
from processor.app import open_ledger
from processor.batch import partition_for
from processor.settings import Settings
from tests.integration.test_pipeline import T0, _events_for, process_until


def _same_partition_accounts(partitions: int, n: int) -> list[str]:
    prefix = f"M-ORD-{uuid.uuid4().hex[:6]}"
    found: list[str] = []
    i = 0
    while len(found) < n:
        account = f"{prefix}-{i}"
        if partition_for(account.encode(), partitions) == 0:
            found.append(account)
        i += 1
    return found


def test_a_payment_queued_behind_a_later_record_is_folded_before_the_business_day_made_after_it(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(consumer_group=f"order-{uuid.uuid4().hex[:8]}")
    topics = settings.topics
    member, other = _same_partition_accounts(settings.partitions, 2)
    rate, enroll, bill, pay = _events_for(member)  # January billed, due 2026-01-01
    _, other_enroll, other_bill, _ = _events_for(other)
    late = PaymentReceived(  # made after the day close, but lands on the topic before the member's payment
        event_id=f"{other}-pay", account_id=other, effective_on=date(2026, 2, 20), occurred_at=T0,
        source="relay", payment_id=f"P202601-{other}", coverage_month=date(2026, 1, 1), amount_cents=78_412,
        method="payroll", payer_id="AG-001",
    )
    day = DayClosed(  # past January's grace period: an unpaid January is missing by now
        event_id=f"{member}-day", account_id=BROADCAST_ACCOUNT, effective_on=date(2026, 3, 15), occurred_at=T0,
        source="operations", business_date=date(2026, 3, 15),
    )
    base = int(time.time() * 1000) - 60_000  # old enough that nothing waits for the clock
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    sent = 0

    def send(topic: str, event: object, key: bytes, partition: int, at: int) -> None:
        nonlocal sent
        producer.send(topic, value=codec.encode(event), key=key, partition=partition,  # type: ignore[arg-type]
                      timestamp_ms=at).get(30)
        sent += 1

    with open_ledger(settings) as ledger:
        try:
            for p in range(settings.partitions):
                send(topics.rates, rate, b"*", p, base)
            send(topics.enrollment, enroll, member.encode(), 0, base + 10)
            send(topics.enrollment, other_enroll, other.encode(), 0, base + 11)
            send(topics.billing, bill, member.encode(), 0, base + 20)
            send(topics.billing, other_bill, other.encode(), 0, base + 21)
            # the payments topic in offset order: the later record first, then the member's payment
            send(topics.payments, late, other.encode(), 0, base + 3_000)
            send(topics.payments, pay, member.encode(), 0, base + 1_000)
            for p in range(settings.partitions):
                send(topics.control, day, b"*", p, base + 2_000)
        finally:
            producer.close()
        asyncio.run(process_until(ledger, sent, relay=False))
        store = ledger.store()
        assert store.counts().applied == sent

        with psycopg.connect(ledger.dsn) as conn:
            order = [r[0] for r in conn.execute(
                "SELECT event_id FROM archive WHERE partition = 0 AND event_id = ANY(%s) ORDER BY seq",
                ([late.event_id, pay.event_id, day.event_id],))]
        # the payments topic's own order is kept; the day close follows the payment made before it
        assert order == [late.event_id, pay.event_id, day.event_id]
        opened = [d for d in store.discrepancies(limit=10**6) if d.account_id == member and d.kind == "missing_payment"]
        assert opened == [], "January was paid before the business day that would have found it missing"
