"""The outbox relay: publishes what the ledger's transactions put in the outbox, in seq order, once each
row is committed (the transactional outbox), and marks what it published.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerClosed
from aiokafka.producer.message_accumulator import BatchBuilder

from processor import metrics
from processor.batch import partition_for
from processor.health import Health
from processor.kafka_clients import aiokafka_options, stop_client
from processor.retry import Outage, is_broker_outage, is_database_outage, retry_async
from processor.settings import Settings
from projections.model import (
    CLAIMS_STREAM,
    DISCREPANCIES_STREAM,
    PAYMENTS_STREAM,
    LedgerStore,
    OutboxRow,
)

relay_log = logging.getLogger("benefits_ledger.relay")


class _Tagged(msgspec.Struct):
    type: str


def _event_type(body: bytes) -> bytes:
    """The type tag of an outbox body, for the ``type`` header subscribers can route on unparsed."""
    return msgspec.json.decode(body, type=_Tagged).type.encode()


# keys whose partition the relay remembers (murmur2 is pure Python here, a few us a key; keys are account ids
# and repeat); about 150 bytes an entry, so 10 MB at most
PARTITION_CACHE_ENTRIES_MAX = 65_536


@functools.lru_cache(maxsize=PARTITION_CACHE_ENTRIES_MAX)
def _partition_of(key: bytes, partitions: int) -> int:
    return partition_for(key, partitions)


RELAY_STOP_WAIT_SECONDS = 10.0  # how long stop waits for a publish in flight before closing the producer


class Relay:
    """Publishes the outbox: discrepancy events to the discrepancy topic, FSA claim adjudications to the
    claims topic, payments the ledger posts itself to the payments topic. Ids are deterministic, so a
    re-publish is visible.

    A payment the ledger posts is delivered only when the processor has seen it come back (the store's
    ``echoed_at``): if the broker lost it (the ledger is now on another log) or it has not come back
    within ``outbox_echo_timeout_seconds``, it is published again; a copy that does arrive twice is a
    duplicate, never a second payment.
    """

    def __init__(self, settings: Settings, bootstrap: str, store: LedgerStore, *, log_id: str | None = None,
                 health: Health | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.store = store
        self.log_id = log_id
        self.health = health
        self._gauges = metrics.DatabaseGauges(store)
        self.producer: AIOKafkaProducer | None = None
        self.published = 0
        bound = settings.outage_retry_seconds_max
        self._database = Outage("PostgreSQL", bound, relay_log)
        self._broker = Outage(f"the broker at {bootstrap}", bound, relay_log)
        self._retry_at = 0.0
        # A publish in flight finishes (and marks its rows published) before stop closes the producer:
        # a timer tick racing the shutdown must neither crash the worker nor publish its rows twice.
        self._publishing = asyncio.Lock()
        self._stopping = False

    async def start(self) -> None:
        if self.health is not None:
            self.health.register("relay")

        async def start_producer() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all",
                                        **aiokafka_options(self.settings))
            try:
                await producer.start()
            except BaseException:
                await stop_client(producer, "the relay's producer")
                raise
            return producer

        self.producer = await retry_async(self._broker, start_producer, is_broker_outage)

    async def stop(self) -> None:
        self._stopping = True
        if self.producer is not None:
            try:  # the publish in flight, if any, gets a bounded wait (the broker may be down)
                await asyncio.wait_for(self._publishing.acquire(), RELAY_STOP_WAIT_SECONDS)
                acquired = True
            except TimeoutError:
                relay_log.warning("relay: a publish still in flight after %s s; closing the producer under it "
                            "(its rows stay in the outbox and are published on the next start)",
                            RELAY_STOP_WAIT_SECONDS)
                acquired = False
            try:
                await stop_client(self.producer, "the relay's producer")
                self.producer = None
            finally:
                if acquired:
                    self._publishing.release()
        self._gauges.close()
        if self.health is not None:
            self.health.unregister("relay")

    def topic_of(self, stream: str) -> str:
        """The topic of an outbox row's stream (a TopicSettings field name, as written by the batch)."""
        topics = self.settings.topics
        by_stream = {DISCREPANCIES_STREAM: topics.discrepancies, CLAIMS_STREAM: topics.claims,
                     PAYMENTS_STREAM: topics.payments}
        if stream not in by_stream:
            raise ValueError(f"outbox row for unknown stream {stream!r}; known: {sorted(by_stream)}")
        return by_stream[stream]

    async def publish_pending(self) -> int:
        """Publish what the outbox holds. PostgreSQL or the broker failing is waited out (rows stay in
        the outbox; the next call, after a backoff, tries again), for at most outage_retry_seconds_max."""
        if time.monotonic() < self._retry_at or self._stopping:
            return 0
        try:
            async with self._publishing:
                if self._stopping or self.producer is None:
                    return 0
                published = await self._publish_pending()
        except ProducerClosed:
            if self._stopping:  # closed under a publish that outlived stop's wait: the rows stay pending
                return 0
            raise
        except Exception as exc:
            outage = self._database if is_database_outage(exc) else self._broker if is_broker_outage(exc) else None
            if outage is None:
                raise
            self._retry_at = time.monotonic() + outage.failed(exc)  # OutageStop past the bound
            return 0
        self._database.recovered()
        return published

    async def _publish_pending(self) -> int:
        assert self.producer is not None
        if self.health is not None:
            self.health.beat("relay")
        if self._gauges.due():
            import psycopg

            try:
                await asyncio.to_thread(self._gauges.refresh)
            except psycopg.Error as exc:  # only the gauges go stale; /readyz reports the database itself
                relay_log.warning("metrics: cannot read the outbox gauges: %s", exc)
        total = 0
        timeout = self.settings.outbox_echo_timeout_seconds
        republish_before = datetime.now(UTC) - timedelta(seconds=timeout) if timeout else None
        while True:
            pending = await asyncio.to_thread(functools.partial(
                self.store.outbox_pending, self.settings.relay_batch_max, log_id=self.log_id,
                republish_before=republish_before))
            if not pending:
                return total
            futures = await self._send(pending)
            await asyncio.gather(*futures)
            self._broker.recovered()
            seqs = [seq for seq, _ in pending]
            await asyncio.to_thread(functools.partial(self.store.mark_published, seqs, log_id=self.log_id))
            for topic, n in Counter(self.topic_of(row.stream) for _, row in pending).items():
                metrics.OUTBOX_PUBLISHED.labels(topic).inc(n)
            total += len(pending)
            self.published += len(pending)

    async def _send(self, pending: list[tuple[int, OutboxRow]]) -> list[asyncio.Future[object]]:
        """Hand the rows to the producer in record batches of one partition each, in seq order within
        each partition (the only order Kafka keeps). One ``send`` per row cost about 16 us of CPU a row
        (a future and an accumulator lookup each); a batch built here costs about 4. The partition is the
        default partitioner's (murmur2 of the key over all the topic's partitions), so a row lands where
        ``send`` would have put it: a payment the ledger posts on its account's partition."""
        assert self.producer is not None
        producer = self.producer
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        partitions: dict[str, list[int]] = {}
        futures: list[asyncio.Future[object]] = []
        for _, row in pending:
            topic = self.topic_of(row.stream)
            ids = partitions.get(topic)
            if ids is None:
                ids = partitions[topic] = sorted(await producer.partitions_for(topic))
            key = row.key.encode()
            partition = ids[_partition_of(key, len(ids))]
            headers = [("event_id", row.event_id.encode()), ("content-type", b"application/json"),
                       ("type", _event_type(row.body))]
            batch = open_batches.get((topic, partition))
            if batch is None:
                batch = open_batches[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=row.body, timestamp=None, headers=headers) is None:
                # full: send it, and start the next (a batch always takes its first record)
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = open_batches[(topic, partition)] = producer.create_batch()
                batch.append(key=key, value=row.body, timestamp=None, headers=headers)
        for (topic, partition), batch in open_batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures
