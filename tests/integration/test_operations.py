"""Operations against the real broker and PostgreSQL: `up --database` folds into that database, a running
`up` serves metrics and health that match the books, topics are created with the replication and
retention settings and existing ones are compared with them."""

from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from processor.app import open_ledger, postgres_store
from processor.settings import Settings
from processor.topics import ensure_topics
from tests.integration.support import UpProcess, wait_for
from tests.unit.builders import bill, enroll, pay, rate


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _events(prefix: str, accounts: int) -> list:
    out: list = [rate(78_412, event_id=f"{prefix}-rate", plan="UMP")]
    for i in range(accounts):
        acct = f"{prefix}-{i:03d}"
        out += [enroll(event_id=f"{acct}-enr", account=acct, plan="UMP"),
                bill(78_412, event_id=f"{acct}-bill", account=acct, plan="UMP"),
                pay(70_000, event_id=f"{acct}-pay", account=acct, trace=f"{acct}-T")]
    return out


def test_up_folds_into_the_database_named_by_the_global_option(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    settings = settings_factory(consumer_group=f"db-{uuid.uuid4().hex[:8]}")
    other = f"ops_other_{uuid.uuid4().hex[:10]}"
    up = UpProcess(settings, tmp_path, ("--database", other, "up"))
    assert settings.database_url is not None
    server = psycopg.conninfo.make_conninfo(settings.database_url, dbname="postgres")
    try:
        with open_ledger(settings, database=other) as ledger:
            pub = ledger.publisher()
            pub.publish(_events("DB", 5))
            pub.close()
            store = ledger.store()
            up.start()
            wait_for(lambda: store.counts().received >= 5 * 3 + settings.partitions, up, "the records")
        assert up.stop() == 0, up.log_tail()
        # one text format for the ledger's, Faust's and the clients' lines; no escape codes in a file
        import re

        lines = [line for line in up.log_path().read_text().splitlines() if line.strip()]
        pattern = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
        assert lines and all(pattern.match(line) for line in lines), lines
        assert any("partitions assigned" in line for line in lines)
        assert not any("\x1b" in line for line in lines)
        default = postgres_store(settings.database_url)
        try:
            default.migrate()
            assert default.counts().received == 0, "the records went to the configured database too"
        finally:
            default.close()
    finally:
        up.stop()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(other)))


def test_a_running_up_serves_metrics_and_health_that_match_the_books(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    settings = settings_factory(consumer_group=f"metrics-{uuid.uuid4().hex[:8]}")
    port = _free_port()
    up = UpProcess(settings, tmp_path)
    up.env.update({"LEDGER_METRICS_PORT": str(port), "LEDGER_LOG_FORMAT": "json"})
    accounts = 6
    try:
        with open_ledger(settings) as ledger:
            pub = ledger.publisher()
            pub.publish(_events("MX", accounts))
            pub.send_raw(settings.topics.payments, b"{not json", b"MX-000")  # one dead letter
            pub.close()
            store = ledger.store()
            up.start()
            wanted = accounts * 3 + settings.partitions + 1
            wait_for(lambda: store.counts().received >= wanted, up, "the records")
            wait_for(lambda: _get(port, "/readyz")[0] == 200, up, "readiness")

            def settled() -> bool:
                samples = _samples(_get(port, "/metrics")[1])
                received = sum(v for (n, _), v in samples.items() if n == "ledger_records_received_total")
                open_gauge = samples.get(("ledger_discrepancies_open", (("kind", "underpaid"),)), 0)
                backlog = samples.get(("ledger_outbox_backlog_rows", ()), -1)
                return received >= wanted and open_gauge == accounts and backlog == 0

            wait_for(settled, up, "the metrics to catch up", timeout=60)
            samples = _samples(_get(port, "/metrics")[1])
            counts = store.counts()

            def by_topic(name: str) -> dict[str, float]:
                return {dict(labels)["topic"]: v for (n, labels), v in samples.items() if n == name}

            received = by_topic("ledger_records_received_total")
            applied = by_topic("ledger_records_applied_total")
            dead = by_topic("ledger_records_dead_lettered_total")
            dups = by_topic("ledger_records_duplicate_total")
            assert sum(received.values()) == counts.received
            assert sum(applied.values()) == counts.applied and sum(dead.values()) == counts.dead_lettered == 1
            assert dead[settings.topics.payments] == 1
            for topic, n in received.items():
                assert n == applied[topic] + dups.get(topic, 0) + dead.get(topic, 0), topic
            assert received[settings.topics.billing] == accounts
            assert samples[("ledger_outbox_oldest_age_seconds", ())] == 0
            assert samples[("ledger_batch_records_count", ())] >= 1
            assert samples[("ledger_commit_seconds_count", ())] >= 1
            lags = {labels: v for (n, labels), v in samples.items() if n == "ledger_consumer_lag_records"}
            assert lags and all(v == 0 for v in lags.values()), lags
            assert samples[("process_resident_memory_bytes", ())] > 10_000_000
            assert samples[("ledger_account_cache_accounts", ())] >= 1
            code, body = _get(port, "/livez")
            assert code == 200 and json.loads(body)["live"] is True
        assert up.stop() == 0
        lines = [line for line in up.log_path().read_text().splitlines() if line.strip()]
        assert lines and all(json.loads(line)["level"] for line in lines), "every log line is one JSON object"
        assert not any("\x1b" in line for line in lines)
    finally:
        up.stop()


def test_topics_are_created_with_the_settings_and_differences_are_named(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_factory(kafka_retention_ms=-1, kafka_min_insync_replicas=1, kafka_replication_factor=1)
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap is not None
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        # an existing input topic made with Kafka's default 7-day retention
        admin.create_topics([NewTopic(settings.topics.payments, settings.partitions, 1,
                                      topic_configs={"retention.ms": "604800000"})])
        with caplog.at_level(logging.WARNING, logger="benefits_ledger.topics"):
            ensure_topics(bootstrap, settings)
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, settings.topics.billing)], config_filter="all")
        billing = {k: v["value"] for k, v in configs["topic"][settings.topics.billing].items()}
    finally:
        admin.close()
    assert billing["retention.ms"] == "-1" and billing["min.insync.replicas"] == "1"
    warned = [r.getMessage() for r in caplog.records if r.name == "benefits_ledger.topics"]  # not a slow client's
    assert warned == [f"topic {settings.topics.payments}: LEDGER_KAFKA_RETENTION_MS asks for retention.ms=-1,"
                      " the topic has retention.ms=604800000"]
