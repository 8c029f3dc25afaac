"""The side-effecting loop: Kafka in, one PostgreSQL transaction per batch, Kafka offsets after it.

Positions live in PostgreSQL and are the truth: on assignment the consumer seeks to the stored
position; Kafka's committed offsets are written afterwards only so that lag monitoring works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NoReturn

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from events.publisher import SEQUENCE_HEADER
from processor import metrics
from processor.batch import BatchProcessor, BatchResult, Record
from processor.collector import FullCollections
from processor.dlq import HEADERS_BYTES_ALLOWANCE, dead_letter_record
from processor.health import Health
from processor.kafka_clients import CLIENT_STOP_TIMEOUT_S, aiokafka_options, kafka_python_options, stop_client
from processor.logid import WHAT_TO_DO, BrokerLost, LogGuard
from processor.merge import StreamMerger
from processor.retry import Outage, is_broker_outage, is_database_outage, retry_async
from processor.rules.fold import Reached, fold_event
from processor.settings import Settings
from processor.stops import LedgerStop
from projections.anchor import Anchorer
from projections.model import (
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
        self.runner.revoke_partitions(tp.partition for tp in revoked)
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


KAFKA_COMMIT_TIMEOUT_S = 10.0  # Kafka's committed offsets only feed lag monitoring: never wait long for them


class ProcessorLoop:
    """Consumes the input topics in batches and applies each batch in one store transaction.

    Outages (processor/retry.py): when PostgreSQL fails, what was folded but not committed is forgotten
    and, once PostgreSQL answers again, the loop starts again from the stored positions; dead letters are
    sent again until the broker takes them; a failed Kafka offset commit (only monitoring reads those) is
    a warning. Each waits at most ``outage_retry_seconds_max``, then raises OutageStop. The log's identity
    is checked at start and every ``log_check_interval_ms`` (processor/logid.py); an embedded broker that
    died is BrokerLost at once (its memory log is gone).
    """

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
        broker_lost: Callable[[], str | None] | None = None,
        cluster_id: str | None = None,
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
        self.broker_lost = broker_lost
        self.processor = BatchProcessor(
            self.read_store, log_id=log_id, plan=settings.plan, topics=settings.topics,
            partitions=settings.partitions, clock=clock, account_cache_max=settings.account_cache_max,
            record_bytes_max=settings.record_bytes_max, account_cache_bytes_max=settings.account_cache_bytes_max,
            key_partition_cache_max=settings.key_partition_cache_max,
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
        self._committing: asyncio.Task[float] | None = None  # the commit a drain is waiting for
        self.batches = 0
        bound = settings.outage_retry_seconds_max
        self._database = Outage("PostgreSQL", bound, log)
        self._broker = Outage(f"the broker at {bootstrap}", bound, log)
        self._dead_letter_topic = Outage(f"the dead-letter topic on the broker at {bootstrap}", bound, log)
        self._commit_warned_at = 0.0
        # PostgreSQL failed under the loop: cached state and the batch in flight are doubtful
        self._resync_after: BaseException | None = None
        self.guard = LogGuard(bootstrap, self.read_store, log_id, topics.inputs(), cluster_id=cluster_id,
                              request_timeout_ms=min(10_000, max(1000, settings.log_check_interval_ms)),
                              client_options=kafka_python_options(settings))
        self._guard_task: asyncio.Task[None] | None = None
        self._main: asyncio.Task[Any] | None = None  # the task running run_once, to interrupt it
        self._fatal: BaseException | None = None  # why the guard interrupted it
        self._collections = FullCollections(settings.gc_full_collect_interval_seconds)

    @property
    def fatal(self) -> BaseException | None:
        """Why the log guard stopped the loop (a LedgerStop), if it did."""
        return self._fatal

    def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        """Positions in PostgreSQL are the truth; Kafka's committed offsets only feed monitoring."""
        assert self.consumer is not None
        try:
            stored = self.read_store.positions(self.log_id)
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            self._resync_after = exc  # run_once seeks once PostgreSQL answers again
            return
        starts = {}
        for tp in assigned:
            starts[(tp.topic, tp.partition)] = offset = stored.get((tp.topic, tp.partition), 0)
            self.consumer.seek(tp, offset)
        # marks the consumer kept from before this seek say nothing about the streams from here on
        self.merger.assign(starts, now_ms=time.time() * 1000)
        self.revoke_partitions([])  # refresh positions

    def revoke_partitions(self, partitions: Iterable[int]) -> None:
        try:
            self.processor.revoke(partitions)
        except Exception as exc:
            if not is_database_outage(exc):
                raise
            self._resync_after = exc

    async def start(self) -> None:
        """Check the log, then start the clients; the guard watches from here on (a client's start waits
        for a broker that may be gone)."""
        self._main = asyncio.current_task()
        self._collections.start()
        try:
            await self._check_log_at_start()
            self._guard_task = asyncio.create_task(self._guard_loop())
            await self._start_clients()
        except asyncio.CancelledError:
            self._raise_fatal()
            raise

    def _raise_fatal(self) -> None:
        """Inside the interrupted task: raise the guard's reason instead of the cancellation."""
        if self._fatal is not None and self._main is not None:
            self._main.uncancel()
            raise self._fatal from None

    async def _start_clients(self) -> None:
        s = self.settings
        security = aiokafka_options(s)
        if self.health is not None:
            self.health.register("processor")

        async def start_producer() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, linger_ms=5, acks="all", **security,
                max_request_size=s.dead_letter_record_bytes_max + HEADERS_BYTES_ALLOWANCE,
            )
            try:
                await producer.start()
            except BaseException:
                await stop_client(producer, "the dead-letter producer")
                raise
            return producer

        self.producer = await retry_async(self._broker, start_producer, is_broker_outage)

        async def start_consumer() -> AIOKafkaConsumer:
            consumer = AIOKafkaConsumer(
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
            self.consumer = consumer
            consumer.subscribe(list(s.topics.inputs()), listener=_Rebalance(self))
            try:
                await consumer.start()
            except BaseException:
                await stop_client(consumer, "the consumer")
                raise
            return consumer

        self.consumer = await retry_async(self._broker, start_consumer, is_broker_outage)

    async def _check_log_at_start(self) -> None:
        """The log's identity before anything is read; waits (bounded) for the broker and PostgreSQL."""
        while True:
            try:
                await asyncio.to_thread(self.guard.check)
            except Exception as exc:
                if is_database_outage(exc):
                    await asyncio.sleep(self._database.failed(exc))
                elif is_broker_outage(exc):
                    await asyncio.sleep(self._broker.failed(exc))
                else:
                    raise
                self._raise_if_broker_lost()
                continue
            self._database.recovered()
            self._broker.recovered()
            return

    async def stop(self) -> None:
        self._stopping.set()
        if self._pending is not None and self.consumer is not None:
            await self.drain()  # a commit PostgreSQL cannot confirm now is redone on the next start
        if self._guard_task is not None:
            self._guard_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._guard_task
            self._guard_task = None
        self.guard.close_later()
        if self.anchor is not None:
            await self.anchor.flush()
            self.anchor.close()
        if self.consumer is not None:
            await stop_client(self.consumer, "the consumer")
            self.consumer = None
        if self.producer is not None:
            await stop_client(self.producer, "the dead-letter producer")
            self.producer = None
        self._gauges.close()
        if self.health is not None:
            self.health.unregister("processor")
        self._collections.stop()

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
        """One batch (see _run_once); waits out PostgreSQL outages. The guard (_guard_loop) interrupts
        it, wherever it waits, when the ledger must stop."""
        self._main = asyncio.current_task()
        try:
            if self._fatal is not None:
                raise self._fatal
            self._raise_if_broker_lost()
            if self._resync_after is not None:
                await self._resync()
                return 0
            try:
                return await self._run_once()
            except Exception as exc:
                if not is_database_outage(exc):
                    raise
                self._resync_after = exc
                return 0
        except asyncio.CancelledError:
            self._raise_fatal()
            raise

    async def _run_once(self) -> int:
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
            await self._raise_truncated(self._out_of_range(exc), exc)
        try:
            self._check_highwater(fetched)
        except LogTruncated as exc:
            await self._raise_truncated(exc, None)
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
            merger.set_highwater(key, highwater, self.consumer.last_poll_timestamp(tp))
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
        """Wait for the in-flight commit; False if it lost a position race or PostgreSQL failed under it
        (then state is reset before the next batch: nothing of it counts until the store shows it)."""
        if self._pending is None:
            committing = self._committing
            if committing is not None:
                # Another caller is waiting for the commit in flight (a rebalance during a batch): the
                # revoked partitions may go to another worker only once it is in the store, or that
                # worker would start from positions without it.
                await asyncio.wait({committing})
            return True
        result, task = self._pending
        self._pending = None
        self._committing = task
        try:
            commit_seconds = await task
        except PositionConflict as exc:
            # Another worker applied these offsets first (a rebalance overtook this batch): nothing of
            # ours was written. Forget cached state and continue from the stored positions.
            log.warning("batch not applied, positions moved underneath it: %s", exc)
            self._resync_after = exc
            return False
        except Exception as exc:
            if is_database_outage(exc):
                # Committed or not, the stored positions say which: redo from them once PostgreSQL is back.
                self._resync_after = exc
                return False
            self.processor.reset()
            raise
        finally:
            self._committing = None
        self.processor.committed(result)
        metrics.record_batch(result, commit_seconds)
        metrics.CACHE_ACCOUNTS.set(len(getattr(self.processor, "_accounts", ())))
        if self.anchor is not None:
            await self.anchor.after_commit(result.write.archive)
        assert self.consumer is not None
        offsets = {TopicPartition(p.topic, p.partition): p.next_offset for p in result.write.positions}
        if offsets:
            try:
                # bounded: without a group coordinator (the broker away) aiokafka would wait for one forever
                await asyncio.wait_for(self.consumer.commit(offsets), KAFKA_COMMIT_TIMEOUT_S)
            except Exception as exc:
                if not isinstance(exc, KafkaError | TimeoutError):
                    raise
                self._warn_commit(exc)
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(result)
        self._collections.tick()
        return True

    def _warn_commit(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._commit_warned_at >= 60:
            self._commit_warned_at = now
            log.warning("Kafka offset commit failed (%s: %s); positions are kept in PostgreSQL, so nothing is lost"
                        " (Kafka's committed offsets only feed lag monitoring)", type(exc).__name__, exc)

    async def _resync(self) -> None:
        """After PostgreSQL failed: wait until it answers (bounded), forget folded state, seek to stored positions."""
        if self._pending is not None:
            _result, task = self._pending
            self._pending = None
            with contextlib.suppress(PositionConflict):
                try:
                    await task
                except Exception as exc:
                    if not is_database_outage(exc):
                        raise
        error = self._resync_after
        while True:
            if error is not None and not isinstance(error, PositionConflict):
                await asyncio.sleep(self._database.failed(error))
            try:
                await asyncio.to_thread(self.store.positions, self.log_id)  # both connections reconnect
                await asyncio.to_thread(self.read_store.positions, self.log_id)
                break
            except Exception as exc:
                if not is_database_outage(exc):
                    raise
                error = exc
        self._database.recovered()
        self._resync_after = None
        self.processor.reset()
        assert self.consumer is not None
        self.seek_to_stored(list(self.consumer.assignment()))

    def _raise_if_broker_lost(self) -> None:
        if self.broker_lost is not None:
            reason = self.broker_lost()
            if reason is not None:
                raise BrokerLost(reason)

    async def _guard_loop(self) -> None:
        """Every log_check_interval_ms: the embedded broker's life, the log's identity and whether the
        broker answers (processor/logid.py). A reason to stop interrupts run_once wherever it waits (a
        consumer waiting for a group coordinator that is gone, say)."""
        interval = self.settings.log_check_interval_ms / 1000
        next_check = time.monotonic() + interval
        try:
            while True:
                await asyncio.sleep(min(0.5, interval))
                self._raise_if_broker_lost()  # often: an embedded broker's death is the end of its log
                if time.monotonic() < next_check:
                    continue
                next_check = time.monotonic() + interval
                try:
                    await asyncio.to_thread(self.guard.check)
                except Exception as exc:
                    if isinstance(exc, LedgerStop):
                        raise
                    if is_broker_outage(exc):
                        self._broker.failed(exc)  # OutageStop once the broker is away longer than the bound
                    elif not is_database_outage(exc):  # PostgreSQL: the batch path waits for it
                        raise
                    continue
                self._broker.recovered()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a stop, or a bug in the check: either ends the loop, with this
            self._fatal = exc
            if self._main is not None and not self._main.done():
                self._main.cancel()

    async def _publish_dead_letters(self, result: BatchResult) -> None:
        """Before the commit: after a crash in between, the batch is redone and the dead letters
        are published again, carrying the same source position headers. A transient broker error (a
        dead-letter topic still being created, a broker restarting) is waited out, bounded."""
        assert self.producer is not None
        if not result.write.dead_letters:
            return
        producer = self.producer

        async def send_all() -> None:
            futures = []
            for d in result.write.dead_letters:
                value, key, headers = dead_letter_record(d, bytes_max=self.settings.dead_letter_record_bytes_max)
                futures.append(await producer.send(
                    self.settings.topics.dead_letter, value=value, key=key, headers=headers
                ))
            await asyncio.gather(*futures)

        await retry_async(self._dead_letter_topic, send_all, is_broker_outage)

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
            f"was the broker restarted or the topic recreated? {WHAT_TO_DO}"
        )

    async def _raise_truncated(self, truncated: LogTruncated, cause: BaseException | None) -> NoReturn:
        """Raise ``truncated``, or the more telling LogReplaced when the log guard sees why (the broker has
        a new cluster id, a topic a new topic id): a fetch may notice the shorter log before the guard runs."""
        try:
            await asyncio.wait_for(asyncio.to_thread(self.guard.check), CLIENT_STOP_TIMEOUT_S)
        except LedgerStop as replaced:
            raise replaced from truncated
        except Exception as exc:
            if not (is_broker_outage(exc) or is_database_outage(exc)):
                raise
            # the guard cannot tell now (a service is away): the truncation stands
            log.debug("log check after a truncation: %s: %s", type(exc).__name__, exc)
        raise truncated from cause

    def _check_highwater(self, fetched: dict[TopicPartition, Any]) -> None:
        assert self.consumer is not None
        stored = self.processor.positions()
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            position = stored.get((tp.topic, tp.partition))
            if hw is not None and position is not None and hw < position:
                raise LogTruncated(
                    f"{tp.topic}[{tp.partition}] ends at offset {hw} but this ledger already applied up to"
                    f" {position} on log {self.log_id}: the broker lost data (a restarted memory broker, a"
                    f" recreated topic?). {WHAT_TO_DO}"
                )
