"""Publishing events to the ledger's input topics (kafka-python).

Account events are keyed by account_id (Kafka's default partitioner puts all of an account on one
partition); broadcast events (rates, business days) are sent once to every partition.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kafka import KafkaProducer

from events import codec
from events.types import (
    AdjustmentPosted,
    BillingCycleClosed,
    DayClosed,
    EnrollmentChanged,
    Event,
    PaymentReceived,
    PaymentReversed,
    PremiumBilled,
    RatePublished,
    RefundIssued,
)
from processor.settings import TopicSettings

SEQUENCE_HEADER = "ledger-seq"  # the producer's send order, ties broken within a millisecond


def topic_for(event: Event, topics: TopicSettings) -> str:
    if isinstance(event, EnrollmentChanged):
        return topics.enrollment
    if isinstance(event, RatePublished):
        return topics.rates
    if isinstance(event, PremiumBilled | AdjustmentPosted):
        return topics.billing
    if isinstance(event, PaymentReceived | PaymentReversed | RefundIssued):
        return topics.payments
    if isinstance(event, DayClosed | BillingCycleClosed):
        return topics.control
    raise TypeError(f"{type(event).__name__} is not an input event")


class Publisher:
    """Sends events; ``records_sent`` counts Kafka records (a broadcast event is one per partition)."""

    def __init__(self, bootstrap: str, topics: TopicSettings, partitions: int, **producer: Any) -> None:
        self.topics = topics
        self.partitions = partitions
        self.records_sent = 0
        self._seq = 0
        options: dict[str, Any] = {"linger_ms": 20, "batch_size": 512 * 1024, "acks": "all", "retries": 5}
        options.update(producer)
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, **options)

    def publish(self, events: Iterable[Event]) -> int:
        sent = 0
        for event in events:
            codec_bytes = codec.encode(event)
            topic = topic_for(event, self.topics)
            if type(event).BROADCAST:
                for p in range(self.partitions):
                    self._producer.send(topic, value=codec_bytes, key=b"*", partition=p, headers=self._sequence())
                    sent += 1
            else:
                self._producer.send(topic, value=codec_bytes, key=event.account_id.encode(),
                                    headers=self._sequence())
                sent += 1
        self.records_sent += sent
        return sent

    def send_raw(self, topic: str, value: bytes | None, key: bytes | None, partition: int | None = None) -> None:
        """For tests and dead-letter retries: a record exactly as given."""
        self._producer.send(topic, value=value, key=key, partition=partition, headers=self._sequence())
        self.records_sent += 1

    def _sequence(self) -> list[tuple[str, bytes]]:
        # Record timestamps are milliseconds: a burst puts many records of several topics in one. The
        # sequence lets the ledger fold one producer's records in the order it sent them, across topics.
        self._seq += 1
        return [(SEQUENCE_HEADER, str(self._seq).encode())]

    def flush(self, timeout_s: float = 60.0) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        self.close()
