"""The relay against the real broker: it builds record batches itself, so each row must land where the
producer's default partitioner would have put it, in seq order within its partition, with its headers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from kafka.admin import KafkaAdminClient, NewTopic

from processor.batch import partition_for
from processor.relay import Relay
from processor.settings import Settings
from projections.memory import MemoryStore
from projections.model import DISCREPANCIES_STREAM, PAYMENTS_STREAM, BatchWrite, OutboxRow
from tests.integration.support import consume_all

ROWS = 1_500  # more than one relay_batch_max, and many full record batches per partition


def _body(i: int) -> bytes:
    kind = "discrepancy_opened" if i % 3 else "discrepancy_resolved"
    return (b'{"type":"' + kind.encode() + b'","seq":' + str(i).encode() + b',"note":"' + b"x" * 400 + b'"}')


def test_the_relay_publishes_every_row_on_its_keys_partition_in_seq_order_with_its_headers(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(relay_batch_max=600)
    topics = settings.topics
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:  # the output topics with a partition count of their own: the relay must read it, not assume it
        admin.create_topics([NewTopic(topics.discrepancies, 3, 1), NewTopic(topics.payments, 5, 1)])
    finally:
        admin.close()
    store = MemoryStore()
    prefix = uuid.uuid4().hex[:6]  # fresh ids; the keys are fixed, so they reach every partition in every run
    rows = [OutboxRow(event_id=f"{prefix}-e{i}", key=f"M-RELAY-{i % 37}", body=_body(i),
                      stream=PAYMENTS_STREAM if i % 4 == 0 else DISCREPANCIES_STREAM) for i in range(ROWS)]
    store.commit_batch(BatchWrite(outbox=rows))

    async def publish() -> int:
        relay = Relay(settings, settings.kafka_bootstrap_servers, store)
        await relay.start()
        try:
            return await relay.publish_pending()
        finally:
            await relay.stop()

    assert asyncio.run(publish()) == ROWS
    assert store.outbox_pending(10, log_id=None) == []

    records = consume_all(settings.kafka_bootstrap_servers, topics.discrepancies, topics.payments)
    assert len(records) == ROWS
    by_id = {r.event_id: (i, r) for i, r in enumerate(rows)}
    seen: dict[tuple[str, int], list[int]] = {}
    for rec in records:
        headers = dict(rec.headers)
        i, row = by_id[headers["event_id"].decode()]
        topic = topics.payments if row.stream == PAYMENTS_STREAM else topics.discrepancies
        assert rec.topic == topic
        assert rec.partition == partition_for(row.key.encode(), 5 if topic == topics.payments else 3), row.key
        assert (rec.key, rec.value) == (row.key.encode(), row.body)
        assert headers["type"] == (b"discrepancy_opened" if i % 3 else b"discrepancy_resolved")
        assert headers["content-type"] == b"application/json"
        seen.setdefault((rec.topic, rec.partition), []).append(i)
    assert len(seen) == 8  # every partition of both topics got rows
    for order in seen.values():  # consume_all reads each partition in offset order
        assert order == sorted(order)
