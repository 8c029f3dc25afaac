"""events.publisher.Publisher with a fake kafka-python producer: validation, chunks, retries, flush, close."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from kafka.future import Future

from events import codec, publisher
from events.publisher import Publisher, PublishError, deterministic_event_id
from processor.settings import TopicSettings
from tests.unit.builders import day, pay

TOPICS = TopicSettings()


class FakeProducer:
    """Fails the first ``fail_first`` sends of every record value, then succeeds."""

    def __init__(self, fail_first: int = 0, **options: Any) -> None:
        self.options = options
        self.fail_first = fail_first
        self.attempts: dict[bytes | None, int] = {}
        self.delivered: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self.pending: list[tuple[Future, tuple[str, bytes | None, bytes | None, int | None]]] = []
        self.flushes = 0
        self.closed = False
        self.sequences: list[int] = []

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
             partition: int | None = None, headers: list[tuple[str, bytes]] | None = None) -> Future:
        future = Future()
        self.pending.append((future, (topic, value, key, partition)))
        self.sequences.append(int(dict(headers or [])["ledger-seq"]))
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        pending, self.pending = self.pending, []
        for future, record in pending:
            n = self.attempts[record[1]] = self.attempts.get(record[1], 0) + 1
            if n <= self.fail_first:
                future.failure(TimeoutError("broker unavailable"))
            else:
                self.delivered.append(record)
                future.success(None)

    def close(self) -> None:
        self.closed = True


def make(monkeypatch: pytest.MonkeyPatch, fail_first: int = 0, **kwargs: Any) -> tuple[Publisher, FakeProducer]:
    made: list[FakeProducer] = []

    def factory(**options: Any) -> FakeProducer:
        made.append(FakeProducer(fail_first, **options))
        return made[-1]

    monkeypatch.setattr(publisher, "KafkaProducer", factory)
    pub = Publisher("localhost:1", TOPICS, 4, backoff_s=0.001, **kwargs)
    return pub, made[0]


def test_account_events_are_keyed_and_broadcasts_go_to_every_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, fake = make(monkeypatch)
    with pub:
        assert pub.publish([pay(100, event_id="p-1"), day(pay(1).effective_on, event_id="d-1")]) == 5
    assert pub.records_sent == 5 and fake.closed
    assert fake.delivered[0][:3] == (TOPICS.payments, codec.encode(pay(100, event_id="p-1")), b"M000001")
    assert sorted(r[3] for r in fake.delivered[1:]) == [0, 1, 2, 3]


def test_an_invalid_event_is_refused_before_anything_of_the_call_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, fake = make(monkeypatch)
    bad = msgspec.structs.replace(pay(100, event_id="p-bad"), amount_cents=0)
    with pytest.raises(codec.EventDecodeError) as info:
        pub.publish([pay(100, event_id="p-ok"), bad])
    assert info.value.field == "amount_cents"
    pub.flush()
    assert fake.delivered == [] and pub.records_sent == 0
    unchecked, _ = make(monkeypatch, validate=False)
    assert unchecked.publish([bad]) == 1


def test_large_publishes_are_sent_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, fake = make(monkeypatch, chunk_events=3)
    assert pub.publish(pay(100, event_id=f"p-{i}") for i in range(7)) == 7
    pub.flush()
    assert len(fake.delivered) == 7


def test_failed_records_are_retried_with_backoff_until_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, fake = make(monkeypatch, fail_first=2, max_attempts=3)
    pub.publish([pay(100, event_id="p-1"), pay(200, event_id="p-2")])
    pub.flush()
    assert len(fake.delivered) == 2 and fake.flushes == 3


def test_records_that_never_make_it_raise_publish_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, fake = make(monkeypatch, fail_first=10, max_attempts=2)
    pub.publish([pay(100, event_id="p-1")])
    with pytest.raises(PublishError) as info:
        pub.flush()
    assert len(info.value.failed) == 1 and "broker unavailable" in str(info.value)
    pub.close()
    pub.close()  # idempotent
    assert fake.closed


def test_deterministic_ids_depend_only_on_the_natural_key() -> None:
    a = deterministic_event_id("payroll", "AG-004", "2026-03", "M07000417")
    assert a == deterministic_event_id("payroll", "AG-004", "2026-03", "M07000417")
    assert a != deterministic_event_id("payroll", "AG-004", "2026-04", "M07000417")
    assert a.startswith("payroll:")


def test_every_send_carries_the_next_sequence_so_the_ledger_can_order_a_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pub, fake = make(monkeypatch)
    with pub:
        pub.publish([pay(100, event_id="s1"), day(pay(1).effective_on, event_id="d-1"), pay(300, event_id="s3")])
    assert fake.sequences == [1, 2, 3, 4, 5, 6]  # the broadcast day takes one per partition


def test_one_request_is_in_flight_per_broker_so_a_retry_cannot_reorder_a_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, producer = make(monkeypatch)
    assert producer.options["max_in_flight_requests_per_connection"] == 1
    assert producer.options["retries"] > 0  # the client retries: hence the one request in flight
