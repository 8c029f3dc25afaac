"""Publishing events to the ledger's input topics (kafka-python).

Account events are keyed by account_id (Kafka's default partitioner puts all of an account on one
partition); broadcast events (rates, business days) are sent once to every partition.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaProducer

from events import codec
from events.topics import TopicSettings, topic_for
from events.types import Event

SEQUENCE_HEADER = "ledger-seq"  # the producer's send order, ties broken within a millisecond


class PublishError(RuntimeError):
    """Records that could not be delivered after every retry; ``failed`` holds (topic, key, reason)."""

    def __init__(self, failed: list[tuple[str, bytes | None, str]]) -> None:
        topic, key, reason = failed[0]
        super().__init__(f"{len(failed)} records not delivered after retries; first: topic {topic} key {key!r}:"
                         f" {reason}")
        self.failed = failed


def deterministic_event_id(source: str, *natural_key: object) -> str:
    """An event id derived from the producer's natural key (file control numbers, trace and line,
    payroll run and member...), so sending the same fact twice gives the same id and the ledger counts
    the copy as a duplicate instead of applying it again."""
    digest = hashlib.sha256("\x1f".join(str(k) for k in (source, *natural_key)).encode()).hexdigest()[:32]
    return f"{source}:{digest}"


class Publisher:
    """Sends events; ``records_sent`` counts Kafka records (a broadcast event is one per partition).

    - validation: every event goes through the codec both ways before it is sent (``validate=True``),
      so the ledger would accept it; an invalid one raises ``codec.EventDecodeError`` naming its field
      before anything of its chunk is sent (a call of at most ``chunk_events`` events is all or nothing);
    - batching: kafka-python batches per partition (``linger_ms``, ``batch_size``); ``publish`` takes
      any iterable and sends it in chunks of ``chunk_events``;
    - order: one request in flight per broker, so the client's retries never reorder a partition;
    - retries: the client retries transient errors itself (``retries``, ``retry_backoff_ms``); a record
      that still fails is sent again by ``flush`` up to ``max_attempts`` times with exponential backoff
      (``backoff_s`` doubling), then ``flush`` raises PublishError;
    - ``flush`` waits for delivery, ``close`` flushes and closes; also a context manager.
    """

    def __init__(
        self, bootstrap: str, topics: TopicSettings, partitions: int, *, validate: bool = True,
        max_attempts: int = 5, backoff_s: float = 0.2, chunk_events: int = 10_000, **producer: Any,
    ) -> None:
        self.topics = topics
        self.partitions = partitions
        self.records_sent = 0
        self.validate = validate
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.chunk_events = max(1, chunk_events)
        self._failed: list[tuple[str, bytes | None, bytes | None, int | None, int, str]] = []
        self._failed_lock = threading.Lock()
        # One request in flight per broker: with more, a retried batch lands after the ones sent behind it
        # and a partition holds records out of their send order, which the ledger's merge of the topics
        # takes as their order (Kafka keeps the order then only with an idempotent producer, which some
        # brokers, Tansu among them, do not support properly).
        options: dict[str, Any] = {"linger_ms": 20, "batch_size": 512 * 1024, "acks": "all", "retries": 5,
                                   "retry_backoff_ms": 200, "max_in_flight_requests_per_connection": 1}
        options.update(producer)
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, **options)
        self._closed = False
        self._seq = 0

    def check(self, event: Event) -> bytes:
        """The bytes the ledger will receive, after the codec's round trip; raises EventDecodeError."""
        raw = codec.encode(event)
        if self.validate:
            back = codec.decode_input(raw)
            if back != event:
                raise codec.EventDecodeError(f"event {event.event_id} does not survive the codec round trip")
        return raw

    def publish(self, events: Iterable[Event]) -> int:
        sent = 0
        chunk: list[Event] = []
        for event in events:
            chunk.append(event)
            if len(chunk) >= self.chunk_events:
                sent += self._send_chunk(chunk)
                chunk = []
        if chunk:
            sent += self._send_chunk(chunk)
        return sent

    def _send_chunk(self, events: list[Event]) -> int:
        prepared = [(event, self.check(event), topic_for(event, self.topics)) for event in events]
        sent = 0
        for event, codec_bytes, topic in prepared:
            if type(event).BROADCAST:
                for p in range(self.partitions):
                    self._send(topic, codec_bytes, b"*", p, 1)
                    sent += 1
            else:
                self._send(topic, codec_bytes, event.account_id.encode(), None, 1)
                sent += 1
        self.records_sent += sent
        return sent

    def _send(self, topic: str, value: bytes | None, key: bytes | None, partition: int | None, attempt: int) -> None:
        # Record timestamps are milliseconds: a burst puts many records of several topics in one. The
        # sequence lets the ledger fold one producer's records in the order it sent them, across topics.
        self._seq += 1
        future = self._producer.send(topic, value=value, key=key, partition=partition,
                                     headers=[(SEQUENCE_HEADER, str(self._seq).encode())])
        future.add_errback(self._on_error, topic, value, key, partition, attempt)

    def _on_error(self, topic: str, value: bytes | None, key: bytes | None, partition: int | None, attempt: int,
                  exc: BaseException) -> None:
        with self._failed_lock:
            self._failed.append((topic, value, key, partition, attempt, f"{type(exc).__name__}: {exc}"))

    def send_raw(self, topic: str, value: bytes | None, key: bytes | None, partition: int | None = None) -> None:
        """For tests and dead-letter retries: a record exactly as given."""
        self._send(topic, value, key, partition, 1)
        self.records_sent += 1

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait for every record; resend failed ones with backoff; raise PublishError if some never made it."""
        self._producer.flush(timeout=timeout_s)
        given_up: list[tuple[str, bytes | None, str]] = []
        while True:
            with self._failed_lock:
                failed, self._failed = self._failed, []
            if not failed:
                break
            retry = [f for f in failed if f[4] < self.max_attempts]
            given_up.extend((f[0], f[2], f[5]) for f in failed if f[4] >= self.max_attempts)
            if not retry:
                continue
            time.sleep(self.backoff_s * 2 ** (min(f[4] for f in retry) - 1))
            for topic, value, key, partition, attempt, _reason in retry:
                self._send(topic, value, key, partition, attempt + 1)
            self._producer.flush(timeout=timeout_s)
        if given_up:
            raise PublishError(given_up)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.flush()
        finally:
            self.close()
