"""Outages of PostgreSQL and of the broker under a running `up` (issue 12, defect 4).

Before: `pg_ctl stop -m immediate` killed `up` in 1.6 s with a traceback, even idle; `up` did not start
while PostgreSQL was down; a broker restart gave a misleading CommitFailedError; a transient error
writing to a new dead-letter topic killed `up`; an embedded broker that died left `up` running and
logging thousands of errors. Now an outage within ``outage_retry_seconds_max`` loses nothing, doubles
nothing and needs no restart; past it, `up` stops with one line and exit code 3; a dead embedded broker
is a data integrity stop (4) at once. The books after each outage equal a pure fold of the same records.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from events.publisher import Publisher
from events.types import Event
from processor.app import ensure_database, open_ledger
from processor.batch import Record
from processor.embedded import EmbeddedPostgres, stop_postgres_in
from processor.embedded_postgres import _pg_ctl_stop
from processor.entrypoints.demo import generate
from processor.settings import Settings
from processor.stops import EXIT_DATA_INTEGRITY, EXIT_OUTAGE
from projections.postgres import PostgresStore
from replay.verify import verify
from tests.faults.broker_proxy import ProxiedBroker
from tests.faults.test_replaced_log import enrollments
from tests.integration.support import WAIT_S, UpProcess, assert_same_books, consume_all, fold_in_memory, wait_for


class PrivatePostgres:
    """An embedded PostgreSQL of this test only, so it can be crashed and restarted."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._servers: list[EmbeddedPostgres] = []
        self.server_dsn = ""

    def start(self) -> None:
        server = EmbeddedPostgres(self.data_dir)
        self.server_dsn = server.start()
        self._servers.append(server)

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every connection dropped, no clean shutdown."""
        assert _pg_ctl_stop(self.data_dir, "immediate")

    def close(self) -> None:
        for server in self._servers:
            server.stop()
        stop_postgres_in(self.data_dir)


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(tmp_path / "pg" / "postgres")
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


def _program_events(members: int, months: int, seed: int) -> tuple[list[Event], int, int]:
    program = generate(members=members, months=months, seed=seed)
    events = [e for _, phase in program.phases for e in phase] + list(program.exact_duplicates)
    return events, len(program.exact_duplicates), program.derived  # what the ledger posts itself comes back


def _same_books_as_a_pure_fold(settings: Settings, ledger_dsn: str, bootstrap: str) -> None:
    """Nothing lost, nothing doubled: the live books equal the in-memory fold of the very same records."""
    store = PostgresStore(ledger_dsn)
    try:
        with psycopg.connect(ledger_dsn) as conn:
            twice = conn.execute('SELECT count(*) FROM (SELECT 1 FROM archive GROUP BY log_id, topic, partition,'
                                 ' "offset" HAVING count(*) > 1) t').fetchone()
            order = [(t, p, o) for t, p, o in conn.execute(
                'SELECT topic, partition, "offset" FROM archive ORDER BY seq')]
        assert twice == (0,)
        records = [Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                   for m in consume_all(bootstrap, *settings.topics.inputs())]
        memory = fold_in_memory(settings, records, order)
        assert memory.counts() == store.counts()
        assert_same_books(store, memory)
        assert verify(ledger_dsn, settings.plan).mismatches == []
    finally:
        store.close()


def _stopped(up: UpProcess, code: int, what: str, timeout: float = WAIT_S) -> str:
    assert up.proc is not None
    try:
        got = up.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"`up` kept running: {what}\n{up.log_tail()}") from None
    output = up.log_tail()
    assert got == code, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    return errors[0]


def _positions_sum(dsn: str, columns: str) -> int:
    """The sum of ``columns`` over the ledger's positions, from a connection of its own (-1 while
    PostgreSQL is away)."""
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            row = conn.execute(f"SELECT coalesce(sum({columns}), 0) FROM positions").fetchone()
        return int(row[0]) if row else 0
    except psycopg.OperationalError:
        return -1


def _received(dsn: str) -> int:
    return _positions_sum(dsn, "applied + duplicates + dead_lettered")


def _settled(dsn: str) -> int:
    """Applied or dead-lettered: every distinct record, duplicates left out."""
    return _positions_sum(dsn, "applied + dead_lettered")


def _error_lines(up: UpProcess) -> int:
    return sum(1 for line in up.log_path().read_text(errors="replace").splitlines() if " ERROR " in line)


# ------------------------------------------------------------------------------------------- PostgreSQL


def test_a_postgresql_outage_mid_run_and_while_idle_loses_nothing_doubles_nothing_and_needs_no_restart(
    private_pg: PrivatePostgres, settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    dsn = ensure_database(private_pg.server_dsn, "outage_ledger")
    settings = settings_factory(database_url=dsn, consumer_group=f"pgout-{uuid.uuid4().hex[:6]}",
                                batch_events_max=500, session_timeout_ms=3000, heartbeat_interval_ms=1000)
    events, duplicates, derived = _program_events(members=300, months=4, seed=21)
    half = len(events) // 2
    up = UpProcess(settings, tmp_path)
    up.env["LEDGER_OUTAGE_RETRY_SECONDS_MAX"] = "60"
    try:
        with open_ledger(settings) as ledger:
            bootstrap = ledger.bootstrap
            with ledger.publisher() as pub:
                first = pub.publish(events[:half])
            watcher_dsn = ledger.dsn

        def received() -> int:
            return _received(watcher_dsn)

        up.start()
        wait_for(lambda: received() >= first * 0.3, up, "30% of the first half")
        private_pg.crash()  # mid-run: a batch may be folding, committing or both
        with Publisher(bootstrap, settings.topics, settings.partitions) as pub:  # the broker is still there
            second = pub.publish(events[half:])
        time.sleep(10)
        up.check_alive()
        private_pg.start()
        everything = first + second + derived
        # An outage between the relay's publish and its mark of the rows published sends those rows (the
        # ledger's own payments) once more: at least once, and the copies are duplicates. So the test waits
        # for what is applied, and bounds the duplicates instead of counting them exactly.
        unique = everything - duplicates
        wait_for(lambda: _settled(watcher_dsn) >= unique, up, f"all {unique} distinct records after the outage")
        up.check_alive()

        # an outage while idle: the relay polls the outbox all the time
        time.sleep(1)
        private_pg.crash()
        time.sleep(5)
        up.check_alive()
        private_pg.start()
        with Publisher(bootstrap, settings.topics, settings.partitions) as pub:
            late = pub.publish(enrollments("AFTER-IDLE", 3))
        wait_for(lambda: _settled(watcher_dsn) >= unique + late, up, "records after the idle outage")
        assert up.stop() == 0, up.log_tail()

        log = up.log_path().read_text(errors="replace")
        assert "waiting for PostgreSQL" in log and "PostgreSQL is back" in log
        assert "Traceback" not in log
        with psycopg.connect(watcher_dsn) as conn:
            applied, dup, dead = conn.execute(
                "SELECT sum(applied), sum(duplicates), sum(dead_lettered) FROM positions").fetchone() or (0, 0, 0)
        assert applied + dead == unique + late
        assert duplicates <= dup <= duplicates + derived  # re-sent copies are only ever the ledger's own
        _same_books_as_a_pure_fold(settings, watcher_dsn, bootstrap)
    finally:
        up.stop()


def test_up_waits_for_postgresql_at_start_and_stops_with_exit_75_after_the_bound(
    private_pg: PrivatePostgres, settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    dsn = ensure_database(private_pg.server_dsn, "outage_start")
    settings = settings_factory(database_url=dsn, consumer_group=f"pgstart-{uuid.uuid4().hex[:6]}",
                                session_timeout_ms=3000, heartbeat_interval_ms=1000)
    with open_ledger(settings) as ledger:
        bootstrap = ledger.bootstrap
    private_pg.crash()
    up = UpProcess(settings, tmp_path)
    up.env["LEDGER_OUTAGE_RETRY_SECONDS_MAX"] = "60"
    try:
        up.start()
        time.sleep(4)
        up.check_alive()
        assert "waiting for PostgreSQL" in up.log_tail()
        private_pg.start()
        with Publisher(bootstrap, settings.topics, settings.partitions) as pub:
            sent = pub.publish(enrollments("START", 5))
        store = PostgresStore(dsn)
        try:
            wait_for(lambda: _received(dsn) >= sent, up, "the records once PostgreSQL is up")
            assert up.stop() == 0, up.log_tail()

            # longer than the bound: one line, exit 3, and nothing lost for the next start
            up.env["LEDGER_OUTAGE_RETRY_SECONDS_MAX"] = "4"
            up.start()
            wait_for(lambda: "ledger up:" in up.log_tail(), up, "`up` to start")
            time.sleep(1)
            private_pg.crash()
            line = _stopped(up, EXIT_OUTAGE, "PostgreSQL down longer than the bound", timeout=60)
            assert "OutageStop" in line and "PostgreSQL unavailable for" in line, line
            assert "outage_retry_seconds_max=4" in line and "Start `benefits-ledger up` again" in line
            private_pg.start()
            with Publisher(bootstrap, settings.topics, settings.partitions) as pub:
                more = pub.publish(enrollments("AGAIN", 4))
            up.env["LEDGER_OUTAGE_RETRY_SECONDS_MAX"] = "60"
            up.start()
            wait_for(lambda: _received(dsn) >= sent + more, up, "the records after the stop")
            assert up.stop() == 0, up.log_tail()
            store.close()
            store = PostgresStore(dsn)
            counts = store.counts()
            assert (counts.received, counts.applied) == (sent + more, sent + more)
        finally:
            store.close()
    finally:
        up.stop()


# ---------------------------------------------------------------------------------------------- broker


@pytest.fixture
def proxied_broker() -> Iterator[ProxiedBroker]:
    broker = ProxiedBroker()
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


def test_a_broker_outage_within_the_bound_loses_nothing_and_past_it_up_stops_with_exit_75(
    proxied_broker: ProxiedBroker, settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    settings = settings_factory(kafka_bootstrap_servers=proxied_broker.bootstrap,
                                consumer_group=f"brk-{uuid.uuid4().hex[:6]}", batch_events_max=500,
                                session_timeout_ms=3000, heartbeat_interval_ms=1000)
    events, duplicates, derived = _program_events(members=200, months=4, seed=23)
    up = UpProcess(settings, tmp_path)
    up.env.update({"LEDGER_OUTAGE_RETRY_SECONDS_MAX": "20", "LEDGER_LOG_CHECK_INTERVAL_MS": "1000"})
    try:
        with open_ledger(settings) as ledger:
            store = ledger.store()
            with ledger.publisher() as pub:
                sent = pub.publish(events)
            up.start()
            wait_for(lambda: store.counts().received >= sent * 0.3, up, "30% of the records")
            proxied_broker.proxy.cut()  # a broker restart or a network partition: the data stays
            time.sleep(10)
            up.check_alive()
            proxied_broker.proxy.restore()
            everything = sent + derived
            unique = everything - duplicates  # the relay may send its own rows again (see the PostgreSQL test)
            wait_for(lambda: store.counts().applied + store.counts().dead_lettered >= unique, up,
                     "every record after the outage")
            wait_for(lambda: not store.outbox_pending(1) and not store.outbox_undelivered(1), up, "the outbox")
            up.check_alive()
            counts = store.counts()
            assert counts.received == counts.applied + counts.duplicates + counts.dead_lettered
            assert counts.applied + counts.dead_lettered == unique
            assert duplicates <= counts.duplicates <= duplicates + derived
            log = up.log_path().read_text(errors="replace")
            assert "CommitFailedError" not in log or "nothing is lost" in log
            assert _error_lines(up) < 60, "the Kafka clients' errors are rate-limited"
            _same_books_as_a_pure_fold(settings, ledger.dsn, proxied_broker.bootstrap)

            # longer than the bound (here 20 s): one line and exit 3
            proxied_broker.proxy.cut()
            line = _stopped(up, EXIT_OUTAGE, "the broker away longer than the bound", timeout=120)
            assert "OutageStop" in line and f"the broker at {proxied_broker.bootstrap}" in line, line
            assert store.counts() == counts
    finally:
        up.stop()


def test_when_the_embedded_broker_dies_under_up_it_stops_at_once_with_one_line(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    settings = settings_factory(consumer_group=f"emb-{uuid.uuid4().hex[:6]}")
    up = UpProcess(settings, tmp_path)
    up.env.pop("LEDGER_KAFKA_BOOTSTRAP_SERVERS")  # `up` starts its own broker
    try:
        up.start()
        wait_for(lambda: (tmp_path / "run" / "broker.json").exists() and "ledger up:" in up.log_tail(), up,
                 "`up` with its embedded broker")
        time.sleep(2)
        assert up.proc is not None
        [tansu] = [p for p in psutil.Process(up.proc.pid).children(recursive=True) if "tansu" in " ".join(p.cmdline())]
        tansu.kill()
        killed_at = time.monotonic()
        line = _stopped(up, EXIT_DATA_INTEGRITY, "its embedded broker is dead", timeout=60)
        assert time.monotonic() - killed_at < 30
        assert "BrokerLost" in line and "memory log is gone" in line and "Start `benefits-ledger up` again" in line
        assert not (tmp_path / "run" / "broker.json").exists(), "no longer advertises the dead broker"
        assert _error_lines(up) < 20
    finally:
        up.stop()


def test_a_dead_letter_the_broker_cannot_take_for_a_while_is_sent_again_and_nothing_stops(
    proxied_broker: ProxiedBroker, settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    """The dead letter is folded while the broker is away (its record is stamped a few seconds ahead, so
    the merger holds it until then): sending it fails, is retried, and the batch commits after it."""
    from kafka import KafkaProducer

    settings = settings_factory(kafka_bootstrap_servers=proxied_broker.bootstrap,
                                consumer_group=f"dlq-{uuid.uuid4().hex[:6]}", session_timeout_ms=3000,
                                heartbeat_interval_ms=1000)
    up = UpProcess(settings, tmp_path)
    up.env.update({"LEDGER_OUTAGE_RETRY_SECONDS_MAX": "60", "LEDGER_MERGE_IDLE_MS": "500"})
    try:
        with open_ledger(settings) as ledger:
            store = ledger.store()
            up.start()
            with ledger.publisher() as pub:
                sent = pub.publish(enrollments("DLQ", 3))
            wait_for(lambda: store.counts().received >= sent, up, "the first records")
            producer = KafkaProducer(bootstrap_servers=proxied_broker.bootstrap)
            try:
                ahead = int(time.time() * 1000) + 4000
                producer.send(settings.topics.payments, value=b"{not json", key=b"DLQ-X",
                              timestamp_ms=ahead).get(30)
            finally:
                producer.close()
            time.sleep(1)
            assert store.counts().received == sent, "held by the merger until its time"
            proxied_broker.proxy.cut()
            time.sleep(8)  # folded and dead-lettered while the broker is away
            up.check_alive()
            assert store.counts().received == sent, "not committed before its dead letter is on the topic"
            proxied_broker.proxy.restore()
            wait_for(lambda: store.counts().received >= sent + 1, up, "the dead letter")
            up.check_alive()
            [letter] = store.dead_letters()
            assert "not JSON" in letter.reason
            on_topic = consume_all(proxied_broker.bootstrap, settings.topics.dead_letter)
            assert b"{not json" in [m.value for m in on_topic]
            assert up.stop() == 0, up.log_tail()
    finally:
        up.stop()
