"""The side-effecting loop: Kafka in, one PostgreSQL transaction per batch, Kafka offsets after it.

Positions live in PostgreSQL and are the truth: on assignment the consumer seeks to the stored
position; Kafka's committed offsets are written afterwards only so that lag monitoring works.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from events.publisher import SEQUENCE_HEADER
from processor import metrics
from processor.batch import BatchProcessor, BatchResult, Record
from processor.health import Health
from processor.kafka_clients import aiokafka_options
from processor.merge import StreamMerger
from processor.rules.fold import Reached, fold_event
from processor.settings import Settings
from projections.anchor import Anchorer
from projections.model import (
    CLAIMS_STREAM,
    DISCREPANCIES_STREAM,
    PAYMENTS_STREAM,
    LedgerStore,
    LogTruncated,
    PositionConflict,
)

log = logging.getLogger("benefits_ledger.processor")


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, runner: ProcessorLoop) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Finish the commit in flight before the partitions go to another worker.
        await self.runner.drain()
        self.runner.merger.revoke((tp.topic, tp.partition) for tp in revoked)
        self.runner.processor.revoke(tp.partition for tp in revoked)
        metrics.forget_partitions(revoked)
        if revoked:
            log.info("partitions revoked: %s", _describe(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # No await before the seek: aiokafka's fetcher runs concurrently and would otherwise try to
        # reset a partition that has no position yet.
        self.runner.seek_to_stored(list(assigned))
        self.runner.joined = True  # a member of the group now, even if it got no partition
        log.info("partitions assigned: %s", _describe(assigned))


def _sequence(headers: Any) -> int:
    """The publisher's send sequence, 0 for records of producers that do not stamp one."""
    for name, value in headers or ():
        if name == SEQUENCE_HEADER:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _describe(tps: Any) -> str:
    return ",".join(sorted({str(tp.partition) for tp in tps}, key=int)) or "none"


class ProcessorLoop:
    """Consumes the input topics in batches and applies each batch in one store transaction."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        store: LedgerStore,
        *,
        log_id: str,
        clock: Callable[[], datetime] = utcnow,
        on_batch: Callable[[BatchResult], None] | None = None,
        read_store: LedgerStore | None = None,
        health: Health | None = None,
        anchor: Anchorer | None = None,
        fold: Callable[..., Reached] = fold_event,
    ) -> None:
        self.settings = settings
        self.health = health
        self.joined = False
        self._gauges = metrics.DatabaseGauges(store)
        self.anchor = anchor  # checkpoints of the chain heads, outside the database (projections/anchor.py)
        self.bootstrap = bootstrap
        self.store = store
        # Folding and the rebalance listener read through their own connection, so they do not wait
        # for a commit running on ``store``'s connection in another thread.
        self.read_store = read_store or store
        self.log_id = log_id
        self.on_batch = on_batch
        self.processor = BatchProcessor(
            self.read_store, log_id=log_id, plan=settings.plan, topics=settings.topics,
            partitions=settings.partitions, clock=clock, account_cache_max=settings.account_cache_max,
            fold=fold,
        )
        topics = settings.topics
        self.merger = StreamMerger(
            {t: rank for rank, t in enumerate(topics.inputs())},
            idle_ms=settings.merge_idle_ms, buffered_max=settings.batch_events_max,
        )
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._pending: tuple[BatchResult, asyncio.Task[float]] | None = None
        self.batches = 0

    def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        """Positions in PostgreSQL are the truth; Kafka's committed offsets only feed monitoring."""
        assert self.consumer is not None
        stored = self.read_store.positions(self.log_id)
        starts = {}
        for tp in assigned:
            starts[(tp.topic, tp.partition)] = offset = stored.get((tp.topic, tp.partition), 0)
            self.consumer.seek(tp, offset)
        self.merger.assign(starts)
        self.processor.revoke([])  # refresh positions

    async def start(self) -> None:
        s = self.settings
        security = aiokafka_options(s)
        if self.health is not None:
            self.health.register("processor")
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all", **security)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            **security,
            group_id=s.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="none",  # a position past the log end is an error, never a silent reset
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_records=s.batch_events_max,
            fetch_max_wait_ms=100,  # bounds how late a record reaches the merger (see merge_idle_ms)
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        self.consumer.subscribe(list(s.topics.inputs()), listener=_Rebalance(self))
        await self.consumer.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._pending is not None and self.consumer is not None:
            await self.drain()
        if self.anchor is not None:
            await self.anchor.flush()
            self.anchor.close()
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        self._gauges.close()
        if self.health is not None:
            self.health.unregister("processor")

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Run until request_stop(); a failing batch raises (nothing of it is committed)."""
        assert self.consumer is not None
        try:
            while not self._stopping.is_set():
                await self.run_once()
        finally:
            await self.drain()

    async def run_once(self) -> int:
        """Fetch and fold one batch, then start its commit; the previous commit is awaited first.

        Folding batch N+1 overlaps the PostgreSQL commit of batch N (the server works on the other
        core). Commits stay strictly in order and Kafka offsets follow each commit.
        """
        assert self.consumer is not None and self.producer is not None
        try:
            fetched = await self.consumer.getmany(
                timeout_ms=self.settings.batch_wait_ms or 1, max_records=self.settings.batch_events_max
            )
        except OffsetOutOfRangeError as exc:
            raise self._out_of_range(exc) from exc
        self._check_highwater(fetched)
        if self.health is not None:
            self.health.beat("processor", consuming=self.joined or bool(self.consumer.assignment()))
        merger = self.merger
        for tp, messages in fetched.items():
            merger.add((tp.topic, tp.partition),
                       [Record(tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp, _sequence(m.headers))
                        for m in messages])
        assignment = self.consumer.assignment()
        pause: list[TopicPartition] = []
        resume: list[TopicPartition] = []
        applied_to = self.processor.positions()
        for tp in assignment:
            key = (tp.topic, tp.partition)
            highwater = self.consumer.highwater(tp)
            merger.set_highwater(key, highwater)
            metrics.record_lag(tp.topic, tp.partition, highwater, applied_to.get(key, 0))
            (pause if merger.full(key) else resume).append(tp)
        records = merger.take(self.settings.batch_events_max, time.time() * 1000)
        for tp in assignment:
            if merger.full((tp.topic, tp.partition)):
                pause.append(tp)
        if pause:
            self.consumer.pause(*pause)
        if resume:
            self.consumer.resume(*[tp for tp in resume if tp not in pause])
        if self._gauges.due():
            await self._refresh_gauges()
        if not records:
            await self.drain()
            if self.anchor is not None:
                await self.anchor.after_commit(())  # idle: partitions whose anchor_interval_ms ran out
            return 0
        result = self.processor.process(records)
        await self._publish_dead_letters(result)
        if not await self.drain():
            return 0  # the earlier batch lost a position race; this one was folded on stale state
        self._pending = (result, asyncio.create_task(asyncio.to_thread(self._commit, result)))
        return len(records)

    async def apply(self, records: list[Record]) -> BatchResult:
        """Fold and commit one batch, waiting for the commit (tests and tools use this)."""
        result = self.processor.process(records)
        await self._publish_dead_letters(result)
        self._pending = (result, asyncio.create_task(asyncio.to_thread(self._commit, result)))
        await self.drain()
        return result

    def _commit(self, result: BatchResult) -> float:
        """The store transaction (in a thread); returns how long it took."""
        started = time.perf_counter()
        self.store.commit_batch(result.write)
        return time.perf_counter() - started

    async def _refresh_gauges(self) -> None:
        import psycopg

        try:
            await asyncio.to_thread(self._gauges.refresh)
        except psycopg.Error as exc:  # only the gauges go stale; /readyz reports the database itself
            log.warning("metrics: cannot read the database gauges: %s", exc)

    async def drain(self) -> bool:
        """Wait for the in-flight commit; False if it lost a position race (state was reset)."""
        if self._pending is None:
            return True
        result, task = self._pending
        self._pending = None
        try:
            commit_seconds = await task
        except PositionConflict as exc:
            # Another worker applied these offsets first (a rebalance overtook this batch): nothing of
            # ours was written. Forget cached state and continue from the stored positions.
            log.warning("batch not applied, positions moved underneath it: %s", exc)
            self.processor.reset()
            assert self.consumer is not None
            self.seek_to_stored(list(self.consumer.assignment()))
            return False
        except BaseException:
            self.processor.reset()
            raise
        self.processor.committed(result)
        metrics.record_batch(result, commit_seconds)
        metrics.CACHE_ACCOUNTS.set(len(getattr(self.processor, "_accounts", ())))
        if self.anchor is not None:
            await self.anchor.after_commit(result.write.archive)
        assert self.consumer is not None
        offsets = {TopicPartition(p.topic, p.partition): p.next_offset for p in result.write.positions}
        if offsets:
            await self.consumer.commit(offsets)
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(result)
        return True

    async def _publish_dead_letters(self, result: BatchResult) -> None:
        """Before the commit: after a crash in between, the batch is redone and the dead letters
        are published again, carrying the same source position headers."""
        assert self.producer is not None
        if not result.write.dead_letters:
            return
        futures = []
        for d in result.write.dead_letters:
            headers = [
                ("reason", d.reason.encode()),
                ("source_topic", d.topic.encode()),
                ("source_partition", str(d.partition).encode()),
                ("source_offset", str(d.offset).encode()),
            ]
            if d.field:
                headers.append(("field", d.field.encode()))
            if d.event_id:
                headers.append(("event_id", d.event_id.encode()))
            futures.append(await self.producer.send(
                self.settings.topics.dead_letter, value=d.raw, key=d.key, headers=headers
            ))
        await asyncio.gather(*futures)

    def _out_of_range(self, exc: OffsetOutOfRangeError) -> LogTruncated:
        """Say which of the two ways a position can be out of range this is."""
        failing = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        stored = self.processor.positions()
        if failing and not any((tp.topic, tp.partition) in stored for tp in failing):
            return LogTruncated(
                f"{', '.join(f'{tp.topic}[{tp.partition}]' for tp in failing)} no longer start at offset 0:"
                " retention deleted history this new ledger has never seen, and starting from what is left"
                " would build incomplete books. Starting a ledger from Kafka needs input topics that keep"
                " everything (retention.ms=-1); otherwise restore the ledger's PostgreSQL from a backup."
            )
        return LogTruncated(
            f"the broker's log ends before a position this ledger already applied ({exc}); "
            "was the broker restarted or the topic recreated? Refusing to skip or re-apply."
        )

    def _check_highwater(self, fetched: dict[TopicPartition, Any]) -> None:
        assert self.consumer is not None
        stored = self.processor.positions()
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            position = stored.get((tp.topic, tp.partition))
            if hw is not None and position is not None and hw < position:
                raise LogTruncated(
                    f"{tp.topic}[{tp.partition}] ends at offset {hw} but this ledger already applied up to"
                    f" {position} on log {self.log_id}: the broker lost data (a restarted memory broker?)."
                    " Refusing to skip or re-apply; point the ledger at the right broker or a new log."
                )


class _Tagged(msgspec.Struct):
    type: str


def _event_type(body: bytes) -> bytes:
    """The type tag of an outbox body, for the ``type`` header subscribers can route on unparsed."""
    return msgspec.json.decode(body, type=_Tagged).type.encode()


class Relay:
    """Publishes the outbox: discrepancy events to the discrepancy topic, FSA claim adjudications to the
    claims topic. Ids are deterministic, so a re-publish is visible."""

    def __init__(self, settings: Settings, bootstrap: str, store: LedgerStore, *,
                 health: Health | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.store = store
        self.health = health
        self.producer: AIOKafkaProducer | None = None
        self.published = 0
        self._gauges = metrics.DatabaseGauges(store)

    async def start(self) -> None:
        if self.health is not None:
            self.health.register("relay")
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all",
                                         **aiokafka_options(self.settings))
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
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
        assert self.producer is not None
        if self.health is not None:
            self.health.beat("relay")
        if self._gauges.due():
            import psycopg

            try:
                await asyncio.to_thread(self._gauges.refresh)
            except psycopg.Error as exc:  # only the gauges go stale; /readyz reports the database itself
                log.warning("metrics: cannot read the outbox gauges: %s", exc)
        total = 0
        while True:
            pending = await asyncio.to_thread(self.store.outbox_pending, self.settings.relay_batch_max)
            if not pending:
                return total
            futures = [
                await self.producer.send(
                    self.topic_of(row.stream), value=row.body, key=row.key.encode(),
                    headers=[("event_id", row.event_id.encode()), ("content-type", b"application/json"),
                             ("type", _event_type(row.body))],
                )
                for _, row in pending
            ]
            await asyncio.gather(*futures)
            await asyncio.to_thread(self.store.mark_published, [seq for seq, _ in pending])
            for _, row in pending:
                metrics.OUTBOX_PUBLISHED.labels(self.topic_of(row.stream)).inc()
            total += len(pending)
            self.published += len(pending)
