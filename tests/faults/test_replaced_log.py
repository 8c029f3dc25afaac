"""A replaced log with the same identity stops the processor with a clear error (issue 12, defect 3).

Before: Tansu restarted with the same cluster id, 28 new events published and the program re-sent,
and 23 of the 28 were never applied, archived or dead-lettered, every check clean; on Kafka the same
happens when a topic is deleted and recreated. Now `up` stops with a data integrity stop (exit code
4), one line that says what to do, nothing skipped or applied; `benefits-ledger accept-log` continues
on the new log from offset 0, where the re-sent events are duplicates and the new ones are applied.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from events.types import EnrollmentChanged
from processor.app import open_ledger
from processor.settings import Settings
from processor.stops import EXIT_DATA_INTEGRITY
from tests.e2e.test_cli import base_env, run_cli
from tests.integration.support import WAIT_S, UpProcess, wait_for
from tests.integration.test_crash_recovery import FixedIdBroker


def enrollments(prefix: str, n: int) -> list[EnrollmentChanged]:
    t0 = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)
    return [
        EnrollmentChanged(
            event_id=f"{prefix}-enr-{i}", account_id=f"{prefix}-{i:03d}", effective_on=t0.date(), occurred_at=t0,
            member_id=f"{prefix}-{i:03d}", plan="DELTA-PPO", coverage_line="dental", tier="EMP", action="add",
            benefit_begin=t0.date(), agency_id="AG-002",
        )
        for i in range(n)
    ]


def _stopped_with_data_integrity(up: UpProcess, what: str) -> str:
    assert up.proc is not None
    try:
        code = up.proc.wait(WAIT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"`up` kept running on {what}:\n{up.log_tail()}") from None
    output = up.log_tail()
    assert code == EXIT_DATA_INTEGRITY, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    return errors[0]


def test_a_broker_restarted_with_the_same_cluster_id_is_a_replaced_log_and_up_stops_saying_what_to_do(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    tansu = FixedIdBroker()
    program = enrollments("PRG", 20)
    settings = settings_factory(kafka_bootstrap_servers=tansu.bootstrap, consumer_group=f"repl-{uuid.uuid4().hex[:6]}",
                                session_timeout_ms=3000, heartbeat_interval_ms=1000)
    up = UpProcess(settings, tmp_path)
    try:
        tansu.start()
        with open_ledger(settings) as ledger:
            store = ledger.store()
            with ledger.publisher() as pub:
                pub.publish(program)
            up.start()
            wait_for(lambda: store.counts().received >= 20, up, "the program")
            assert up.stop() == 0, up.log_tail()
            before, positions = store.counts(), store.positions(tansu.cluster_id)

        tansu.stop()  # memory storage: everything it held is gone
        tansu.start()  # same address, same cluster id
        new = enrollments("NEW", 28)
        with open_ledger(settings) as ledger:
            assert ledger.log_id == tansu.cluster_id, "the restarted broker has the log's identity"
            with ledger.publisher() as pub:
                pub.publish(new)  # 28 new events land at offsets below the stored positions ...
                pub.publish(program)  # ... and the re-sent program above them
            up.start()
            line = _stopped_with_data_integrity(up, "a replaced log")
            assert "LogReplaced" in line and "accept-log" in line and settings.topics.enrollment in line
            store = ledger.store()
            assert store.counts() == before, "nothing skipped, applied or dead-lettered from the replaced log"
            assert store.positions(tansu.cluster_id) == positions

            # the operator accepts the new log: it is read from offset 0
            env = base_env(tmp_path, LEDGER_DATABASE_URL=ledger.dsn, LEDGER_KAFKA_BOOTSTRAP_SERVERS=ledger.bootstrap)
            accepted = run_cli(["--json", "accept-log"], env, tmp_path, timeout=60)
            assert accepted.returncode == 0, accepted.stderr
            new_log = accepted.json()["log_id"]
            assert accepted.json()["retired_log_id"] == tansu.cluster_id and new_log == f"{tansu.cluster_id}~2"

        with open_ledger(settings) as ledger:
            assert ledger.log_id == new_log
            store = ledger.store()
            up.start()
            wait_for(lambda: store.counts().received >= before.received + 48, up, "the new log, from offset 0")
            assert up.stop() == 0, up.log_tail()
            counts = store.counts()
            assert counts.received == before.received + 48 == counts.applied + counts.duplicates + counts.dead_lettered
            assert counts.applied == before.applied + 28, "every one of the 28 new events is applied"
            assert counts.duplicates == before.duplicates + 20, "the re-sent program is duplicates"
            for event in new:
                assert store.balance(event.account_id) is not None, event.event_id
            assert store.positions(tansu.cluster_id) == positions, "the retired log's positions stay as they were"
    finally:
        up.stop()
        tansu.stop()


def _recreate(bootstrap: str, topic: str, partitions: int, up: UpProcess) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
        wait_for(lambda: topic not in admin.list_topics(), up, "the topic to go")
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def test_a_topic_deleted_and_recreated_stops_up_whether_it_was_running_or_not(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    tansu = FixedIdBroker()
    settings = settings_factory(kafka_bootstrap_servers=tansu.bootstrap, consumer_group=f"recr-{uuid.uuid4().hex[:6]}",
                                session_timeout_ms=3000, heartbeat_interval_ms=1000)
    up = UpProcess(settings, tmp_path)
    up.env["LEDGER_LOG_CHECK_INTERVAL_MS"] = "500"
    try:
        tansu.start()
        with open_ledger(settings) as ledger:
            store = ledger.store()
            with ledger.publisher() as pub:
                pub.publish(enrollments("RUN", 10))
            up.start()
            wait_for(lambda: store.counts().received >= 10, up, "the first records")
            before = store.counts()

            # under a running `up`: the recreated topic is empty (LogTruncated) or new (LogReplaced)
            _recreate(tansu.bootstrap, settings.topics.enrollment, settings.partitions, up)
            line = _stopped_with_data_integrity(up, "a recreated topic")
            assert ("LogReplaced" in line or "LogTruncated" in line) and settings.topics.enrollment in line
            assert "accept-log" in line
            assert store.counts() == before

            # while `up` is down, recreated again and filled past the stored positions: LogReplaced at start
            _recreate(tansu.bootstrap, settings.topics.enrollment, settings.partitions, up)
            with ledger.publisher() as pub:
                pub.publish(enrollments("LATE", 40))
            up.start()
            line = _stopped_with_data_integrity(up, "a recreated topic with more records than were applied")
            assert "LogReplaced" in line and settings.topics.enrollment in line
            counts = store.counts()
            assert counts == before and counts.received == counts.applied + counts.duplicates + counts.dead_lettered
    finally:
        up.stop()
        tansu.stop()


@pytest.mark.parametrize("new_cluster_id", [False, True], ids=["same-cluster-id", "new-cluster-id"])
def test_a_broker_restarted_under_a_running_up_is_a_data_integrity_stop_not_a_commit_failure(
    settings_factory: Callable[..., Settings], tmp_path: Path, new_cluster_id: bool,
) -> None:
    """Before: a misleading CommitFailedError. The memory broker's restart lost its log: with the same
    cluster id (LogReplaced or LogTruncated) or another one at the same address (LogReplaced), `up` stops."""
    tansu = FixedIdBroker()
    settings = settings_factory(kafka_bootstrap_servers=tansu.bootstrap, consumer_group=f"rst-{uuid.uuid4().hex[:6]}",
                                session_timeout_ms=3000, heartbeat_interval_ms=1000)
    up = UpProcess(settings, tmp_path)
    up.env["LEDGER_LOG_CHECK_INTERVAL_MS"] = "500"
    try:
        tansu.start()
        with open_ledger(settings) as ledger:
            store = ledger.store()
            with ledger.publisher() as pub:
                pub.publish(enrollments("MID", 12))
            up.start()
            wait_for(lambda: store.counts().received >= 12, up, "the records")
            before = store.counts()
            tansu.stop()
            if new_cluster_id:
                tansu.cluster_id = uuid.uuid4().hex
            tansu.start()  # at the same address, with everything it held gone
            line = _stopped_with_data_integrity(up, "a broker that restarted under it")
            assert "LogReplaced" in line or "LogTruncated" in line, line  # not a CommitFailedError
            if new_cluster_id:
                assert f"is now cluster {tansu.cluster_id}" in line, line
            counts = store.counts()
            assert counts == before and counts.received == counts.applied + counts.duplicates + counts.dead_lettered
    finally:
        up.stop()
        tansu.stop()
