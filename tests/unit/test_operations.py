"""Operations, without services: exit codes and one-line errors, strict dates, topic shape, client
security options, log formats, metrics and health endpoints, tables that never cut an amount."""

from __future__ import annotations

import io
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from rich.console import Console

from processor import exits, metrics
from processor.batch import BatchResult
from processor.health import Health, OpsServer
from processor.kafka_clients import aiokafka_options, faust_credentials, kafka_python_options
from processor.logs import configure
from processor.settings import Settings
from processor.topics import topic_differences, wanted_configs
from projections.model import BatchWrite, Counts, LogTruncated, PositionAdvance, Summary
from replay.statements import TimeParseError, parse_known_at, parse_through


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- exit codes --------------------------------------------------------------------------------------


def test_exit_codes_are_the_documented_ones() -> None:
    assert (exits.EXIT_OK, exits.EXIT_FINDINGS, exits.EXIT_USAGE, exits.EXIT_UNREACHABLE,
            exits.EXIT_INTEGRITY) == (0, 1, 2, 3, 4)


@pytest.mark.parametrize(("error", "code", "words"), [
    (LogTruncated("ledger.payments[2] ends at offset 3"), 4, "data integrity stop (LogTruncated)"),
    (exits.UsageError("bad"), 2, "bad"),
    (psycopg.OperationalError("connection refused"), 3, "LEDGER_DATABASE_URL"),
])
def test_expected_failures_become_one_line_and_their_exit_code(error: Exception, code: int, words: str) -> None:
    lines: list[str] = []

    def fail() -> int:
        raise error

    assert exits.run(fail, stderr=lines.append) == code
    assert len(lines) == 1 and "\n" not in lines[0] and words in lines[0]


def test_an_invalid_setting_is_a_usage_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_PARTITIONS", "0")
    lines: list[str] = []
    assert exits.run(lambda: int(Settings() is None), stderr=lines.append) == 2
    assert "LEDGER_PARTITIONS" in lines[0]


def test_a_bug_keeps_its_traceback() -> None:
    def bug() -> int:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        exits.run(bug, stderr=lambda line: None)


def test_an_unreachable_broker_is_reported_within_seconds_naming_the_setting() -> None:
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(exits.ServiceUnreachable) as caught:
        exits.probe_broker(f"127.0.0.1:{port}", timeout_s=2.0)
    assert time.monotonic() - started < 3.0
    assert "LEDGER_KAFKA_BOOTSTRAP_SERVERS" in str(caught.value) and str(port) in str(caught.value)
    assert caught.value.code == 3


def test_an_unreachable_database_is_reported_within_seconds_naming_the_setting() -> None:
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(exits.ServiceUnreachable) as caught:
        exits.probe_database(f"postgresql://ledger@127.0.0.1:{port}/benefits_ledger", timeout_s=2.0)
    assert time.monotonic() - started < 3.0
    message = str(caught.value)
    assert "LEDGER_DATABASE_URL" in message and f"127.0.0.1:{port}" in message and "\n" not in message


def test_a_database_that_does_not_exist_is_a_usage_error_saying_to_migrate() -> None:
    err = psycopg.OperationalError('connection failed: FATAL:  database "nosuchdb" does not exist')
    known = exits.database_error(err, "postgresql://ledger@db:5432/nosuchdb")
    assert known.code == 2 and "nosuchdb" in str(known) and "benefits-ledger migrate" in str(known)


# -- strict dates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-1x", "2026-02-30", "13/2026"])
def test_an_impossible_date_is_an_error_not_rolled_over(text: str) -> None:
    with pytest.raises(TimeParseError):
        parse_through(text)
    with pytest.raises(TimeParseError):
        parse_known_at(text)


def test_valid_months_still_mean_their_last_day() -> None:
    assert str(parse_through("2026-12")) == "2026-12-31"
    assert str(parse_through("2028-02")) == "2028-02-29"
    assert parse_known_at("2026-01", tz="UTC").date().isoformat() == "2026-01-31"


# -- topics ------------------------------------------------------------------------------------------


def test_topics_are_created_to_keep_everything_with_the_replication_settings() -> None:
    settings = Settings(kafka_bootstrap_servers="kafka-1:9092")
    configs = wanted_configs(settings)
    topics = settings.topics
    for topic in (*topics.inputs(), topics.discrepancies, topics.claims):
        assert configs[topic] == {"retention.ms": "-1", "min.insync.replicas": "2"}
    assert "retention.ms" not in configs[topics.dead_letter]
    assert settings.topic_replication_factor == 3


def test_the_embedded_broker_gets_replication_factor_and_min_isr_one() -> None:
    settings = Settings()
    assert settings.embedded_broker
    assert settings.topic_replication_factor == 1 and settings.topic_min_insync_replicas == 1
    assert wanted_configs(settings)[settings.topics.payments]["min.insync.replicas"] == "1"


def test_existing_topics_that_differ_from_the_settings_are_named() -> None:
    settings = Settings(kafka_bootstrap_servers="kafka-1:9092")
    topics = settings.topics
    replicas = {t: 3 for t in wanted_configs(settings)}
    replicas[topics.billing] = 1
    configs = {t: dict(c) for t, c in wanted_configs(settings).items()}
    configs[topics.payments]["retention.ms"] = "604800000"  # Kafka's 7-day default
    del configs[topics.enrollment]["min.insync.replicas"]  # not reported: not a difference
    found = [str(d) for d in topic_differences(settings, replicas, configs)]
    assert found == [
        f"topic {topics.billing}: LEDGER_KAFKA_REPLICATION_FACTOR asks for replication factor 3, the topic has"
        " replication factor 1",
        f"topic {topics.payments}: LEDGER_KAFKA_RETENTION_MS asks for retention.ms=-1, the topic has"
        " retention.ms=604800000",
    ]


# -- client security ---------------------------------------------------------------------------------


# A self-signed certificate and its key, made once with openssl for these tests (client.pem is also the CA).
TLS = Path(__file__).resolve().parents[1] / "fixtures" / "tls"


def test_tls_and_sasl_settings_reach_every_client() -> None:
    cert, key = TLS / "client.pem", TLS / "client.key"
    settings = Settings(kafka_bootstrap_servers="kafka-1:9093", kafka_security_protocol="SASL_SSL",
                        kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="ledger",
                        kafka_sasl_password="pw", kafka_ssl_cafile=cert, kafka_ssl_certfile=cert,
                        kafka_ssl_keyfile=key)
    for options in (kafka_python_options(settings), aiokafka_options(settings)):
        assert options["security_protocol"] == "SASL_SSL"
        assert options["sasl_mechanism"] == "SCRAM-SHA-512"
        assert options["sasl_plain_username"] == "ledger" and options["sasl_plain_password"] == "pw"
        assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    creds = faust_credentials(settings)
    assert creds.username == "ledger" and creds.password == "pw" and creds.ssl_context is not None
    # the clients accept them: each validates its configuration keys when constructed (no connection yet)
    from aiokafka import AIOKafkaProducer
    from kafka.admin import KafkaAdminClient

    assert not set(kafka_python_options(settings)) - set(KafkaAdminClient.DEFAULT_CONFIG)
    import inspect

    assert not set(aiokafka_options(settings)) - set(inspect.signature(AIOKafkaProducer).parameters)


def test_sasl_without_its_password_is_refused() -> None:
    with pytest.raises(ValueError, match="kafka_sasl_password"):
        Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u")


def test_plaintext_needs_no_credentials() -> None:
    settings = Settings()
    assert kafka_python_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


# -- logs --------------------------------------------------------------------------------------------


def _log_lines(fmt: Any) -> list[str]:
    stream = io.StringIO()
    configure(fmt, "INFO", stream)
    log = logging.getLogger("benefits_ledger.processor")
    log.info("partitions assigned: %s", "0,1")
    logging.getLogger("aiokafka.consumer").warning("heartbeat failed")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("batch failed")
    configure("text", "WARNING")  # leave logging as the other tests expect it
    return stream.getvalue().splitlines()


def test_json_logs_are_one_object_per_line_for_ours_and_the_libraries() -> None:
    lines = _log_lines("json")
    records = [json.loads(line) for line in lines]
    assert [r["message"] for r in records] == ["partitions assigned: 0,1", "heartbeat failed", "batch failed"]
    assert {r["logger"] for r in records} == {"benefits_ledger.processor", "aiokafka.consumer"}
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert "RuntimeError: boom" in records[2]["exc_info"]
    assert not any("\x1b" in line for line in lines)


def test_text_logs_have_one_format_and_no_escape_codes() -> None:
    lines = _log_lines("text")
    assert lines[0].endswith("INFO benefits_ledger.processor: partitions assigned: 0,1")
    assert lines[1].endswith("WARNING aiokafka.consumer: heartbeat failed")
    assert not any("\x1b" in line for line in lines)


# -- metrics and health ------------------------------------------------------------------------------


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_batch_metrics_count_by_topic_and_add_up() -> None:
    before = {k: _value(f"ledger_records_{k}_total", topic="t.metrics")
              for k in ("received", "applied", "duplicate", "dead_lettered")}
    batches = _value("ledger_batch_records_count")
    write = BatchWrite(positions=[
        PositionAdvance("log", "t.metrics", 0, None, 10, applied=7, duplicates=2, dead_lettered=1),
        PositionAdvance("log", "t.metrics", 1, 4, 9, applied=5, duplicates=0, dead_lettered=0),
    ])
    metrics.record_batch(BatchResult(write=write), commit_seconds=0.02)
    delta = {k: _value(f"ledger_records_{k}_total", topic="t.metrics") - v for k, v in before.items()}
    assert delta == {"received": 15, "applied": 12, "duplicate": 2, "dead_lettered": 1}
    assert delta["received"] == delta["applied"] + delta["duplicate"] + delta["dead_lettered"]
    assert _value("ledger_batch_records_count") == batches + 1
    metrics.record_lag("t.metrics", 3, highwater=120, position=100)
    assert _value("ledger_consumer_lag_records", topic="t.metrics", partition="3") == 20


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_endpoints_say_live_ready_and_why_not() -> None:
    database_up = {"ok": True}

    def check() -> None:
        if not database_up["ok"]:
            raise psycopg.OperationalError("connection refused")

    health = Health(database_check=check, db_check_s=0.0)
    server = OpsServer(health, "127.0.0.1", 0).start()
    try:
        assert _get(server.port, "/readyz")[0] == 503, "nothing registered: not consuming yet"
        health.register("processor")
        code, body = _get(server.port, "/readyz")
        assert code == 503 and json.loads(body)["consuming"] == {"processor": False}
        health.beat("processor", consuming=True)
        assert _get(server.port, "/readyz")[0] == 200
        assert _get(server.port, "/livez")[0] == 200
        database_up["ok"] = False
        code, body = _get(server.port, "/readyz")
        assert code == 503 and "connection refused" in json.loads(body)["database_error"]
        assert _get(server.port, "/livez")[0] == 200, "a database outage is not a reason to restart"
        health.stall_s = 0.0
        time.sleep(0.01)
        assert _get(server.port, "/livez")[0] == 503, "a loop that stopped turning is not live"
        code, text = _get(server.port, "/metrics")
        assert code == 200 and "ledger_records_received_total" in text and "process_resident_memory_bytes" in text
    finally:
        server.stop()


def test_a_web_app_without_a_loop_is_live_and_ready_while_its_database_answers() -> None:
    from processor.health import start_ops_server

    port = _closed_port()
    settings = Settings(metrics_port=port)
    server = start_ops_server(settings, f"postgresql://ledger@127.0.0.1:{_closed_port()}/x", "web")
    assert server is not None
    try:
        server.health.stall_s = 0.0  # no heartbeat needed: it has no loop
        time.sleep(0.01)
        assert _get(port, "/livez")[0] == 200
        code, body = _get(port, "/readyz")
        assert code == 503 and json.loads(body)["database_error"], "its database is down"
    finally:
        server.stop()
    assert start_ops_server(Settings(), "postgresql:///x", "web") is None, "no port: no endpoint"


# -- tables ------------------------------------------------------------------------------------------


def test_a_wide_table_never_cuts_an_amount_at_140_columns() -> None:
    from processor.tables import amounts_table, print_table

    columns = ("month", "expected", "employee", "employer", "billed", "adjusted", "paid", "refunded",
               "unapplied", "balance", "due", "post-tax", "imputed")
    big = "$12,345,678.90"
    table = amounts_table("months", columns, [("2026-03", *([big] * 9), "2026-03-31", big, big)])
    out = io.StringIO()
    print_table(table, Console(file=out, width=140, force_terminal=False, color_system=None))
    text = out.getvalue()
    assert text.count(big) == 11 and "…" not in text


def test_summary_is_tables_not_dict_reprs() -> None:
    from processor.tables import print_table, summary_tables

    summary = Summary(members=3, accounts=2, coverage_months=24, billed_cents=123456, adjusted_cents=0,
                      paid_cents=100000, outstanding_cents=23456, credits_cents=0, unapplied_cents=500,
                      discrepancies_opened_by_kind={"underpaid": 2}, discrepancies_open_by_kind={"underpaid": 1},
                      counts=Counts(received=10, applied=8, duplicates=1, dead_lettered=1))
    out = io.StringIO()
    console = Console(file=out, width=100, color_system=None)
    for table in summary_tables(summary):
        print_table(table, console)
    text = out.getvalue()
    assert "{" not in text and "Counts(" not in text
    assert "$1,234.56" in text and "underpaid" in text and "dead-lettered" in text
