"""Another team's engineer builds on docs/ alone: a producer and a subscriber written with confluent-kafka
(librdkafka, as a service in another language would be) against a real run of the ledger on the
embedded broker.

- The producer follows the documented partitioner (murmur2_random): everything is applied. The same
  records sent with librdkafka's default partitioner are dead-lettered with a reason naming murmur2.
- The subscriber reads the discrepancy topic named in docs/asyncapi.json, validates every message
  (headers, key, body) against docs/schemas, and follows each discrepancy by offset from opened to
  resolved, as the document says to.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
from psycopg import sql
from referencing import Registry, Resource

from processor.app import open_ledger, run_services
from processor.embedded import EmbeddedBroker, EmbeddedPostgres
from processor.settings import Settings

confluent_kafka = pytest.importorskip("confluent_kafka")

DOCS = Path(__file__).resolve().parents[2] / "docs"
ACCOUNTS = 12
WAIT_S = 120.0
PARTITIONS = 4  # the documented default (LEDGER_PARTITIONS); docs/asyncapi.json channel bindings


# -- what the other team reads: docs/ only -----------------------------------------------------------


def documented() -> tuple[dict[str, Any], dict[str, jsonschema.protocols.Validator]]:
    doc = json.loads((DOCS / "asyncapi.json").read_text())
    schemas = {p.name: json.loads(p.read_text()) for p in (DOCS / "schemas").glob("*.json")}
    registry: Registry = Registry().with_resources((n, Resource.from_contents(s)) for n, s in schemas.items())
    validators = {n.removesuffix(".json"): jsonschema.Draft202012Validator(
        s, registry=registry, format_checker=jsonschema.FormatChecker()) for n, s in schemas.items()}
    return doc, validators


def _wire(tag: str, **fields: Any) -> bytes:
    return json.dumps({"type": tag, **fields}).encode()


def program(prefix: str) -> list[tuple[str, str, bytes]]:
    """(channel, key, value) in the wire format the schemas describe, written by hand as another team
    would: a rate, and per account an enrollment, a bill, a short payment and a later top-up."""
    t0 = "2026-01-02T09:00:00Z"
    out = [("rates", "*", _wire("rate_published", event_id=f"{prefix}-rate", account_id="*",
                                effective_on="2026-01-01", occurred_at=t0, rate_id=f"{prefix}-R1", plan="UMP",
                                tier="EMP", month_from="2026-01-01", total_cents=78412, employee_cents=11762,
                                employer_cents=66650))]
    for i in range(ACCOUNTS):
        acct = f"{prefix}-M{i:03d}"
        common = {"account_id": acct, "occurred_at": t0, "source": "other-team"}
        out += [
            ("enrollment", acct, _wire("enrollment_changed", event_id=f"{acct}-enr", effective_on="2026-01-01",
                                       member_id=acct, plan="UMP", coverage_line="health", tier="EMP",
                                       action="add", benefit_begin="2026-01-01", agency_id="AG-001", **common)),
            ("billing", acct, _wire("premium_billed", event_id=f"{acct}-bill", effective_on="2026-01-01",
                                    bill_id=f"{acct}-B1", coverage_month="2026-01-01", plan="UMP", tier="EMP",
                                    amount_cents=78412, due_on="2026-01-31", agency_id="AG-001", **common)),
            ("payments", acct, _wire("payment_received", event_id=f"{acct}-pay1", effective_on="2026-01-05",
                                     payment_id=f"{acct}-P1", coverage_month="2026-01-01", amount_cents=70000,
                                     method="payroll", payer_id="AG-001", trace_number=f"{acct}-T1", **common)),
        ]
    return out


def top_ups(prefix: str) -> list[tuple[str, str, bytes]]:
    return [("payments", f"{prefix}-M{i:03d}", _wire(
        "payment_received", event_id=f"{prefix}-M{i:03d}-pay2", account_id=f"{prefix}-M{i:03d}",
        effective_on="2026-01-20", occurred_at="2026-01-20T09:00:00Z", payment_id=f"{prefix}-M{i:03d}-P2",
        coverage_month="2026-01-01", amount_cents=8412, method="payroll", payer_id="AG-001",
        trace_number=f"{prefix}-M{i:03d}-T2")) for i in range(ACCOUNTS)]


def produce(bootstrap: str, doc: dict[str, Any], records: list[tuple[str, str, bytes]], partitioner: str) -> None:
    """A librdkafka producer; broadcast events ('*' key) go once to every partition, as documented."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "partitioner": partitioner,
                                        "acks": "all", "linger.ms": 5})
    failures: list[Any] = []
    for channel, key, value in records:
        topic = doc["channels"][channel]["address"]
        targets = range(PARTITIONS) if key == "*" else [None]
        for partition in targets:
            kwargs = {} if partition is None else {"partition": partition}
            producer.produce(topic, value=value, key=key.encode(),
                             headers=[("content-type", b"application/json")],
                             on_delivery=lambda err, msg: failures.append(err) if err else None, **kwargs)
    assert producer.flush(30) == 0
    assert failures == []


class Subscriber:
    """Follows the discrepancy topic in a consumer group, checking each message as it arrives."""

    def __init__(self, bootstrap: str, doc: dict[str, Any], validators: dict[str, Any]) -> None:
        self.doc = doc
        self.validators = validators
        self.topic = doc["channels"]["discrepancies"]["address"]
        required = doc["components"]["schemas"]["OutputHeaders"]["required"]
        self.required_headers = set(required)
        self.consumer = confluent_kafka.Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"other-team-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest", "enable.auto.commit": True,
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
        })
        self.consumer.subscribe([self.topic])
        self.status: dict[str, str] = {}  # discrepancy_id -> opened | changed | resolved | superseded
        self.history: dict[str, list[str]] = {}
        self.messages = 0

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            self.check(msg)

    def check(self, msg: Any) -> None:
        headers = {k: v.decode() for k, v in (msg.headers() or [])}
        assert self.required_headers <= set(headers), headers
        body = json.loads(msg.value())
        tag = headers["type"]
        assert tag == body["type"] and headers["content-type"] == "application/json"
        assert tag in self.doc["channels"]["discrepancies"]["messages"], tag
        self.validators[tag].validate(body)  # raises on any difference from docs/schemas/<type>.json
        assert headers["event_id"] == body["event_id"]
        assert msg.key().decode() == body["account_id"]
        did = body["discrepancy_id"]
        step = tag.removeprefix("discrepancy_")
        before = self.status.get(did)
        if step == "opened":
            assert before is None, f"{did} opened twice"
        else:
            assert before in ("opened", "amount_changed"), f"{did}: {step} before it was opened (offset order)"
        self.status[did] = step
        self.history.setdefault(did, []).append(step)
        self.messages += 1

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def private_stack(pg_server: EmbeddedPostgres, tmp_path: Path) -> Iterator[Settings]:
    """A broker of its own, so the topics have exactly the documented names."""
    name = f"subscriber_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with EmbeddedBroker() as broker:
            yield Settings(kafka_bootstrap_servers=broker.bootstrap, database_url=pg_server.dsn_for(name),
                           partitions=PARTITIONS, data_dir=tmp_path, consumer_group=f"sub-{name}")
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_librdkafka_subscriber_follows_discrepancies_from_opened_to_resolved(private_stack: Settings) -> None:
    doc, validators = documented()
    assert "murmur2_random" in doc["info"]["description"]
    with open_ledger(private_stack) as ledger:
        stop = asyncio.Event()
        loop = asyncio.new_event_loop()
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                loop.run_until_complete(run_services(ledger, stop))
            except BaseException as exc:  # reported by the test below
                failure.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        subscriber = Subscriber(ledger.bootstrap, doc, validators)
        store = ledger.store()
        try:
            produce(ledger.bootstrap, doc, program("ok"), partitioner="murmur2_random")
            expected = 1 * PARTITIONS + 3 * ACCOUNTS
            deadline = time.monotonic() + WAIT_S
            while len(subscriber.status) < ACCOUNTS:
                assert not failure, failure
                assert time.monotonic() < deadline, f"opened {len(subscriber.status)} of {ACCOUNTS}"
                subscriber.poll(0.5)
            assert set(subscriber.status.values()) == {"opened"}
            produce(ledger.bootstrap, doc, top_ups("ok"), partitioner="murmur2_random")
            while set(subscriber.status.values()) != {"resolved"}:
                assert not failure, failure
                assert time.monotonic() < deadline, subscriber.status
                subscriber.poll(0.5)
            counts = store.counts()
            assert counts.received == expected + ACCOUNTS
            assert counts.dead_lettered == 0, "the documented partitioner puts every record where it belongs"
            assert all(h == ["opened", "resolved"] for h in subscriber.history.values()), subscriber.history
            rows = store.discrepancies(limit=1000)
            assert {r.discrepancy_id for r in rows} == set(subscriber.status)
            assert {r.kind for r in rows} == {"underpaid"} and {r.status for r in rows} == {"resolved"}

            # librdkafka's default partitioner: the accounts whose key lands elsewhere are refused, with
            # a reason that says which partitioner to use
            produce(ledger.bootstrap, doc, program("rnd")[1:], partitioner="consistent_random")
            while store.counts().received < expected + ACCOUNTS + 3 * ACCOUNTS:
                assert not failure, failure
                assert time.monotonic() < deadline, store.counts()
                time.sleep(0.2)
            dead = store.dead_letters()
            assert dead, "consistent_random placed every key as murmur2 would: pick other keys"
            assert all("murmur2" in d.reason and "murmur2_random" in d.reason for d in dead)
        finally:
            subscriber.close()
            stop.set()
            thread.join(60)
            loop.close()
    assert not failure, failure
    assert subscriber.messages == 2 * ACCOUNTS


def test_documented_examples_validate_and_a_wrong_kind_does_not() -> None:
    _, validators = documented()
    opened = {"type": "discrepancy_opened", "event_id": "e1", "account_id": "M1", "effective_on": "2026-01-05",
              "occurred_at": datetime(2026, 1, 5, tzinfo=UTC).isoformat(), "discrepancy_id": "d1",
              "kind": "underpaid", "expected_cents": 78412, "actual_cents": 70000, "cause_event_ids": ["p1"],
              "explanation": "short", "action": "collect", "actor": "agency_coordinator"}
    validators["discrepancy_opened"].validate(opened)
    assert not validators["discrepancy_opened"].is_valid({**opened, "kind": "underpayed"})
    assert not validators["discrepancy_opened"].is_valid({**opened, "effective_on": "2026-13-05"})
    assert not validators["discrepancy_opened"].is_valid({**opened, "expected_cents": 784.12})
    assert not validators["discrepancy_opened"].is_valid({k: v for k, v in opened.items() if k != "actor"})
